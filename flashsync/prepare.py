"""Prepare a tree of talking-face videos as flashsync clips: in parallel, resumably, split by speaker.

    python data.py videos ROOT [--crop=full|box] [--boxes=FILE] [--workers=N] [--clip_seconds=S] ...

Layouts (DESIGN.md §3 for the clip format it writes):
  speaker/clip folders   LRS3 ROOT/<speaker>/<clip>.mp4, VoxCeleb2 ROOT/<speaker>/<video>/<clip>.mp4:
                         already face-centred crops, so --crop=full (the frame's centre square is the face)
  long videos            HDTF ROOT/<name>_<n>.mp4: --crop=box, the face box tracked from --box (the same
                         first-frame box for all) or --boxes FILE (per video, tree.load_boxes)
Speakers, splits, clip names and box tables: flashsync/tree.py.

One job per video, run by --workers processes. A job writes its clips (each directory atomically,
dataset.write_clip), then its record <out>/prepared/<name>.json: the clips it made, or why it made
none. The records are the truth: a re-run skips every video that has one (resume), and the index and
the report are rebuilt from them, so a killed run, run again, ends with the same index as an
uninterrupted one. A video without a record is redone (clips it had finished are kept, not rewritten);
one that killed its worker process twice (a decoder crash, the OOM killer) is recorded as "crashed".
Errors of the machine (disk full, out of memory) stop the run without a record: fix, run again.
"""
import concurrent.futures
import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import time

import av
import numpy as np
import torch

from flashsync import FPS, SAMPLES_PER_FRAME, face, video
from flashsync.audio import fit_length, load_audio
from flashsync.dataset import dump_json, write_clip, write_index
from flashsync.tree import VIDEO_EXT, assign_splits, clip_names, find_videos, load_boxes, speaker_of
from flashsync.util import UserError, check_file, warn

LOST = 0.4            # the tracker's match (normalised correlation) below which, over 0.5 s, the face is lost
SPEECH_DB = -35.0     # a frame louder than this re its video's peak counts as speech in the summary
SILENT = 1e-3         # a soundtrack whose peak is below this (-60 dBFS) is silence, not speech
RETRY = {"no face box"}   # reasons a re-run tries again (the user may have added the box since)
MACHINE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE}  # stop the run


# ----------------------------------------------------------------------------- a video's clips

def cut_points(level, n, clip, shortest):
    """Frame ranges [(start, end), ...] covering n frames in clips of about `clip` frames: each cut at the
    quietest frame (level: dB per frame) within a quarter clip of its target, so words stay whole, and
    never leaving less than half a clip after it; the last takes the rest (0.5 to 1.5 clips). Ranges
    shorter than `shortest` are dropped."""
    out, s = [], 0
    while n - s > 1.5 * clip:
        lo, hi = s + int(0.75 * clip), min(s + int(1.25 * clip), n - int(0.5 * clip))
        c = lo + int(np.argmin(level[lo:hi]))
        out.append((s, c))
        s = c
    out.append((s, n))
    return [(a, b) for a, b in out if b - a >= shortest]


def frame_db(audio):
    """dB re the peak of each 40 ms frame's RMS: (T * 640,) -> (T,)."""
    a = np.asarray(audio, np.float64)
    a = a[:len(a) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME].reshape(-1, SAMPLES_PER_FRAME)
    rms = np.sqrt((a * a).mean(1) + 1e-12)
    return 20 * np.log10(rms / max(rms.max(), 1e-6))


# ----------------------------------------------------------------------------- one video (a worker's job)

class _Skip(Exception):
    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


_expert, _parent = {}, [None]


def _sync_expert(path):
    if path not in _expert:
        from flashsync.checkpoint import load_model
        _expert[path] = load_model(path, "syncnet")
    return _expert[path]


def _orphaned():
    """True when the run that started this worker is gone (killed): a new run may own the folder now."""
    return _parent[0] is not None and os.getppid() != _parent[0]


def prepare_video(job):
    """One video -> its record (also written to <out>/prepared/<name>.json). job: dict(root, rel, name,
    speaker, out, options (see prepare), box: None, a first-frame box, per-frame boxes or a box file)."""
    o, marks = job["options"], os.path.join(job["out"], "prepared")
    path = os.path.join(job["root"], job["rel"])
    rec = dict(path=job["rel"], name=job["name"], speaker=job["speaker"], options=o, clips=[])
    tries = os.path.join(marks, job["name"] + ".tries")    # left behind if this process dies on the video
    n_tries = os.path.getsize(tries) if os.path.exists(tries) else 0
    with open(tries, "a") as f:
        f.write("x")
    t0 = time.time()
    try:
        if n_tries >= 2:
            raise _Skip("crashed", "its worker process died on it twice (a decoder crash or out of memory)")
        info = video.probe(path)
        rec.update(width=info.width, height=info.height)
        if not info.has_audio:
            raise _Skip("no audio", "the file has no audio track")
        if info.duration < o["min_seconds"]:
            raise _Skip("too short", f"{info.duration:.2f} s < --min_seconds {o['min_seconds']}")
        sound = fit_length(load_audio(path), info.frames * SAMPLES_PER_FRAME).numpy()
        if np.abs(sound).max() < SILENT:
            raise _Skip("silent audio", "the soundtrack is silent (peak below -60 dBFS)")
        level = frame_db(sound)
        segs = cut_points(level, info.frames, round(o["clip_seconds"] * FPS), round(o["min_seconds"] * FPS))
        box, per_frame = _boxes(job["box"], o["crop"], info)
        try:
            face.check_box(box, info.width, info.height)
        except UserError as e:
            raise _Skip("box outside the frame", str(e)) from None
        names = [job["name"] if len(segs) == 1 else f"{job['name']}_s{i:03d}" for i in range(len(segs))]
        done = [os.path.exists(os.path.join(job["out"], "clips", n, "meta.json")) for n in names]  # a killed run's
        crops, k = [], 0
        frames = face.track(video.read_frames(path, info=info), box, per_frame, lost=LOST)
        try:
            for i, (frame, b) in enumerate(frames):
                if k == len(segs):
                    break
                if i >= segs[k][0]:
                    crops.append(None if done[k] else face.crop(frame, b, o["resolution"]))
                if i + 1 == segs[k][1]:
                    rec["clips"].append(_finish(job, names[k], crops, sound, level, segs[k][0], done[k], info, path))
                    crops, k = [], k + 1
        except face.LostFace as err:                    # keep the clips before it; the rest of the video is dropped
            rec["lost"] = str(err)
            crops = crops[:max(0, err.frame - segs[k][0])]
        if k < len(segs) and len(crops) >= round(o["min_seconds"] * FPS):      # the last clip, cut short
            rec["clips"].append(_finish(job, names[k], crops, sound, level, segs[k][0], done[k], info, path))
        if all(c.get("skipped") for c in rec["clips"]):
            if rec["clips"]:
                raise _Skip("out of sync", "every clip: " + rec["clips"][0]["skipped"])
            raise _Skip("box lost", rec.pop("lost")) if "lost" in rec else _Skip("too short", "no clip was left")
    except _Skip as s:
        rec.update(skipped=s.reason, detail=s.detail, clips=[c for c in rec["clips"] if not c.get("skipped")])
    except MemoryError:
        raise                                           # the machine's trouble, not the file's: no record
    except OSError as e:
        if e.errno in MACHINE and not isinstance(e, av.error.FFmpegError):
            raise
        rec.update(skipped="unreadable", detail=str(e))
    except UserError as e:
        rec.update(skipped="unreadable", detail=str(e))
    except Exception as e:                              # a file that breaks the decoder some other way
        rec.update(skipped="unreadable", detail=f"{type(e).__name__}: {e}")
    rec["seconds"] = round(time.time() - t0, 2)
    if _orphaned():
        os._exit(0)
    dump_json(os.path.join(marks, job["name"] + ".json"), rec)
    os.remove(tries)
    return rec


def _boxes(box, crop, info):
    """The job's box source -> (first-frame box, per-frame boxes or None)."""
    if crop == "full":                                  # the centre square is the face
        s = min(info.width, info.height)
        return ((info.width - s) / 2, (info.height - s) / 2, s, s), None
    if box is None:
        raise _Skip("no face box", "--crop=box but neither --box nor the --boxes table gives this video's box")
    if isinstance(box, str):                            # a detector's per-frame file
        try:
            box = face.load_boxes(box)
        except UserError as e:
            raise _Skip("bad box file", str(e)) from None
    if isinstance(box, list):
        if abs(len(box) - info.frames) > max(2, info.frames // 50):
            raise _Skip("bad box file", f"{len(box)} boxes for {info.frames} frames at 25 fps (a detector run "
                                        f"at the source's frame rate? give one box per 25 fps frame)")
        return box[0], box
    return box, None


def _finish(job, name, crops, sound, level, start, done, info, path):
    """Write one clip (unless a killed run finished it) -> its record entry (with `skipped` when the sync
    expert finds it out of sync)."""
    o, n = job["options"], len(crops)
    audio = sound[start * SAMPLES_PER_FRAME:(start + n) * SAMPLES_PER_FRAME]
    entry = dict(name=name, frames=n, start=start, speech_frames=int((level[start:start + n] > SPEECH_DB).sum()))
    if done:
        return entry
    frames = np.stack(crops)
    if o["max_offset"]:
        from flashsync.syncnet import lse
        r = lse(_sync_expert(o["syncnet"]), frames, audio)
        if abs(r["offset"]) >= o["max_offset"] and r["lse_c"] >= o["min_confidence"]:
            entry.update(skipped=f"audio {r['offset']:+d} frames out of sync (LSE-C {r['lse_c']:.2f})")
            return entry
    if _orphaned():
        os._exit(0)
    meta = dict(source=path, speaker=job["speaker"], start_frame=start, width=info.width, height=info.height,
                resolution=o["resolution"], crop=o["crop"])
    write_clip(job["out"], name, frames, audio, meta)
    return entry


def _worker_init(parent):
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's: it stops the run
    torch.set_num_threads(1)
    _parent[0] = parent


# ----------------------------------------------------------------------------- the whole tree

def prepare(root, out, options, box=None, boxes="", workers=1, speaker_pattern="", val=0.05, test=0.05):
    """Prepare every video under root into the dataset at out -> the summary (also in the report).
    options: dict(resolution, crop, clip_seconds, min_seconds, max_offset, syncnet, min_confidence): what
    makes a clip; a re-run with other options is refused, so one dataset never mixes two recipes."""
    root, out = os.path.abspath(root), os.path.abspath(out)
    o = options
    if o["crop"] not in ("full", "box"):
        raise UserError(f"--crop={o['crop']}: use full (the frame is the face) or box (track --box / --boxes)")
    if o["crop"] == "box" and box is None and not boxes:
        raise UserError("--crop=box needs the face box: --box x,y,w,h (the same for every video) or --boxes TABLE")
    if not 0 < o["min_seconds"] <= o["clip_seconds"]:
        raise UserError(f"need 0 < --min_seconds ({o['min_seconds']}) <= --clip_seconds ({o['clip_seconds']})")
    from flashsync.syncnet import MAX_OFFSET
    if not 0 <= o["max_offset"] <= MAX_OFFSET:
        raise UserError(f"--max_offset={o['max_offset']}: give 0 (no check) to {MAX_OFFSET} frames")
    if o["max_offset"]:
        check_file(o["syncnet"], "sync expert checkpoint (--syncnet)")
    if not (0 <= val and 0 <= test and val + test < 1):
        raise UserError(f"--val_fraction ({val}) and --test_fraction ({test}) must be >= 0 and add up to < 1")
    try:
        if speaker_pattern and re.compile(speaker_pattern).groups < 1:
            raise UserError(f"--speaker_of {speaker_pattern!r} has no group ( ): e.g. --speaker_of='^([^/]+)/'")
    except re.error as e:
        raise UserError(f"--speaker_of {speaker_pattern!r} is not a regular expression ({e})") from None
    table = load_boxes(boxes) if boxes else {}
    videos, other = find_videos(root, skip=os.path.realpath(out))
    if not videos:
        raise UserError(f"{root}: no video files under it (looked for {', '.join(sorted(VIDEO_EXT))})")
    speakers = {rel: speaker_of(rel, speaker_pattern) for rel in videos}
    names = clip_names(videos)
    split = assign_splits(sorted(set(speakers.values())), val, test)
    if len(split) < 3:
        warn(f"only {len(split)} speaker(s) under {root}: all go to train (val and test need 3 or more)")
    marks = os.path.join(out, "prepared")
    os.makedirs(marks, exist_ok=True)
    lock = _lock(marks)
    _check_owner(out, root, o)
    _clean(out)
    records = {}
    for rel in videos:
        try:
            with open(os.path.join(marks, names[rel] + ".json")) as f:
                rec = json.load(f)
        except (OSError, ValueError):                  # none yet (or torn): the video is (re)done
            continue
        if rec.get("skipped") not in RETRY:
            records[rel] = rec
    unused = sorted(set(table) - set(videos))
    jobs = [dict(root=root, rel=rel, name=names[rel], speaker=speakers[rel], out=out, options=o,
                 box=table.get(rel, box)) for rel in videos if rel not in records]
    print(f"{len(videos)} videos of {len(split)} speakers under {root}: {len(records)} already prepared, "
          f"{len(jobs)} to go with {workers} worker{'s' * (workers > 1)}", flush=True)
    t0, frames, n = time.time(), 0, 0
    state = dict(root=root, split=split, speakers=speakers, other=other, unused=unused, resolution=o["resolution"])
    previous = signal.signal(signal.SIGTERM, _interrupt)     # a scheduler's stop is a Ctrl-C too
    threads = torch.get_num_threads()
    try:
        for rec in _run(jobs, workers):
            records[rec["path"]] = rec
            n += 1
            frames += sum(c["frames"] for c in rec["clips"])
            el = time.time() - t0
            print(f"\r{n}/{len(jobs)} videos, {n / el:.2f} videos/s, {frames / el:.0f} frames/s, "
                  f"ETA {(len(jobs) - n) * el / n / 60:.1f} min ", end="", flush=True)
            if time.time() - state.get("written", t0) > 30:      # a usable index while it runs
                _write(out, records, state)
    except KeyboardInterrupt:
        _write(out, records, state)
        print(f"\ninterrupted after {n} of {len(jobs)} videos; the same command resumes", flush=True)
        raise
    except concurrent.futures.process.BrokenProcessPool:
        _write(out, records, state)
        raise UserError("a worker process died (out of memory, or a decoder crash); run the same command "
                        "again: a video that kills its worker twice is skipped as 'crashed'") from None
    except (OSError, MemoryError) as e:
        _write(out, records, state)
        raise UserError(f"stopped: {e}; fix it (disk space? memory?) and run the same command again") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
        lock.close()
    el = time.time() - t0
    rate = dict(seconds=round(el, 1), workers=workers, videos_per_second=round(n / el, 3) if n else None,
                frames_per_second=round(frames / el, 1) if n else None)
    return _write(out, records, state, rate)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(jobs, workers):
    """Yield each job's record as it finishes: in this process (one worker), or in `workers` processes
    (spawned: a clean interpreter each, one thread each), a bounded number of jobs in flight."""
    torch.set_num_threads(1)                # the same arithmetic (the tracker's) however many workers
    if workers == 1 or len(jobs) < 2:
        yield from map(prepare_video, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init,
                                                initargs=(os.getpid(),)) as pool:
        todo, running = iter(jobs), set()
        try:
            while True:
                for job in todo:
                    running.add(pool.submit(prepare_video, job))
                    if len(running) >= 4 * workers:
                        break
                if not running:
                    return
                finished, running = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
                for f in finished:
                    yield f.result()
        except BaseException:
            for f in running:
                f.cancel()                  # videos in progress finish (their clips are atomic); no new ones
            raise


def _lock(marks):
    """Hold a lock on the output for this run: two runs into one folder would redo each other's videos."""
    f = open(os.path.join(marks, ".lock"), "w")
    try:
        import fcntl
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:                     # not on this OS: no lock
        pass
    except OSError:
        f.close()
        raise UserError(f"another data.py is preparing into {os.path.dirname(marks)}; wait for it or stop it") from None
    return f


def _check_owner(out, root, o):
    """Refuse an output folder that holds another dataset, another tree or another recipe."""
    path = os.path.join(out, "prepared", ".source.json")
    mine = dict(root=root, options=o)
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        if theirs["root"] != root:
            raise UserError(f"{out} holds clips prepared from {theirs['root']}; give another --out_dir "
                            f"(or one ROOT above both trees)")
        diff = {k: (v, o.get(k)) for k, v in theirs["options"].items() if o.get(k) != v}
        if diff:
            raise UserError(f"{out} was prepared with other settings ("
                            + ", ".join(f"--{k}={a} there, {b} now" for k, (a, b) in diff.items())
                            + "); give another --out_dir, or the same settings to resume")
    elif os.path.exists(os.path.join(out, "index.json")):
        raise UserError(f"{out} already holds a dataset made another way; give another --out_dir")
    else:
        dump_json(path, mine)


def _clean(out):
    """Remove what a killed run left half-written: atomic_path's temporaries (.name.*.tmp*)."""
    for d in (os.path.join(out, "clips"), os.path.join(out, "prepared"), out):
        if os.path.isdir(d):
            for f in os.listdir(d):
                if f.startswith(".") and ".tmp" in f:
                    p = os.path.join(d, f)
                    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def _report_path(out, root):
    return os.path.join(out, os.path.basename(root) + "_report.json")


def _write(out, records, state, extra=None):
    """The index and the report, from the records -> the summary."""
    split, speakers = state["split"], state["speakers"]
    clips = [dict(name=c["name"], split=split[speakers[rel]], frames=c["frames"], speaker=speakers[rel], source=rel)
             for rel, r in records.items() for c in r["clips"] if not c.get("skipped")]
    if clips:
        write_index(out, clips, state["resolution"], merge=False)
    skipped = []
    for rel, r in sorted(records.items()):
        kept = f"; the {len(r['clips'])} clip(s) before it are kept" if r["clips"] else ""
        if r.get("skipped"):
            skipped.append(dict(path=rel, reason=r["skipped"], detail=r.get("detail", "") + kept))
        elif r.get("lost"):
            skipped.append(dict(path=rel, reason="box lost", detail=r["lost"] + kept))
        skipped += [dict(path=rel, clip=c["name"], reason="out of sync", detail=c["skipped"])
                    for c in r["clips"] if c.get("skipped") and not r.get("skipped")]
    reasons = {}
    for s in skipped:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    by_name = {c["name"]: c for r in records.values() for c in r["clips"]}
    not_square = sum(1 for r in records.values() if r["options"]["crop"] == "full" and r.get("width")
                     and r["width"] != r["height"])
    summary = dict(root=state["root"], videos=len(records), clips=len(clips),
                   hours=round(sum(c["frames"] for c in clips) / FPS / 3600, 4),
                   speech_hours=round(sum(by_name[c["name"]]["speech_frames"] for c in clips) / FPS / 3600, 4),
                   speakers={s: len({c["speaker"] for c in clips if c["split"] == s}) for s in ("train", "val", "test")},
                   clips_per_split={s: sum(c["split"] == s for c in clips) for s in ("train", "val", "test")},
                   skipped_by_reason=reasons, other_files=state["other"], not_square_full_crops=not_square,
                   box_table_entries_without_video=state["unused"], **(extra or {}))
    summary["report"] = _report_path(out, state["root"])
    dump_json(summary["report"], dict(summary, skipped=skipped))
    state["written"] = time.time()
    return summary


def print_summary(s):
    print(f"\n{s['clips']} clips from {s['videos']} videos: {s['hours']:.3f} h kept, {s['speech_hours']:.3f} h of it "
          f"speech; speakers train/val/test {s['speakers']['train']}/{s['speakers']['val']}/{s['speakers']['test']}")
    for reason, n in sorted(s["skipped_by_reason"].items()):
        print(f"  skipped, {reason}: {n}")
    if s["not_square_full_crops"]:
        warn(f"{s['not_square_full_crops']} videos are not square: --crop=full took their centre square; for "
             f"footage that is not already a face crop give the boxes (--crop=box --boxes TABLE)")
    if s["box_table_entries_without_video"]:
        warn(f"{len(s['box_table_entries_without_video'])} entries of the box table match no video under ROOT "
             f"(e.g. {s['box_table_entries_without_video'][0]!r}; paths are relative to ROOT)")
    if s.get("frames_per_second"):
        print(f"  {s['videos_per_second']:.2f} videos/s, {s['frames_per_second']:.0f} frames/s with {s['workers']} "
              f"worker{'s' * (s['workers'] > 1)} in {s['seconds']:.0f} s")
    print(f"index: {os.path.dirname(s['report'])}/index.json; every skipped file and why: {s['report']}")

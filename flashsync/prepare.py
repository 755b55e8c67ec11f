"""Prepare a tree of talking-face videos as flashsync clips: in parallel, resumably, split by speaker.

    python data.py videos ROOT [--crop=full|box] [--boxes=FILE] [--workers=N] [--clip_seconds=S] ...

Layouts (DESIGN.md §3 for the clip format it writes):
  speaker/clip folders   LRS3 ROOT/<speaker>/<clip>.mp4, VoxCeleb2 ROOT/<speaker>/<video>/<clip>.mp4:
                         already face-centred crops, so --crop=full (the frame's centre square is the face)
  long videos            HDTF ROOT/<name>.mp4, one speaker each: --crop=box, the face box tracked from
                         --box (the same first-frame box for all) or --boxes FILE (per video, see load_boxes)
The speaker is the first folder under ROOT (a file directly in ROOT is its own speaker), or group 1
of the regular expression --speaker_of matched against the path under ROOT.

One job per video, run by --workers processes. A job writes its clips (each directory atomically,
dataset.write_clip), then its record <out>/prepared/<name>.json: the clips it made, or why it made
none. The records are the truth: a re-run skips every video that has one (resume), and the index and
the report are rebuilt from them, so a killed run, run again, ends with the same index as an
uninterrupted one. A video without a record is redone (clips it had finished are kept, not rewritten).

Split by speaker, so no identity is in two splits, by a fixed rule: u = sha1(speaker) as a number in
[0, 1); u < val -> val, u < val + test -> test, else train. With 3 speakers or more, an empty val or
test split takes the train speaker with the smallest u. Same tree, same split, on every machine.
"""
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import time

import numpy as np
import torch

from flashsync import FPS, SAMPLES_PER_FRAME, face, video
from flashsync.util import UserError, check_file

VIDEO_EXT = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".wmv",
             ".3gp", ".ogv"}
LOST = 0.4            # the tracker's match (normalised correlation) below which, for 0.5 s, the face is lost
SPEECH_DB = -35.0     # a frame louder than this re its clip's peak counts as speech in the summary


# ----------------------------------------------------------------------------- the tree

def find_videos(root):
    """Paths under root (relative, '/'-separated, sorted) of the files with a video extension, and a count
    of the other files by extension (transcripts, box files: not an error)."""
    if not os.path.isdir(root):
        raise UserError(f"{root} is not a directory")
    found, other = [], {}
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            if f.startswith("."):
                continue
            ext = os.path.splitext(f)[1].lower()
            rel = os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            if ext in VIDEO_EXT:
                found.append(rel)
            else:
                other[ext or "(none)"] = other.get(ext or "(none)", 0) + 1
    return sorted(found), other


def speaker_of(rel, pattern=""):
    """The speaker of a video at path rel under the root: group 1 of `pattern`, else the first folder,
    else (a file directly in the root) its own name."""
    if pattern:
        m = re.search(pattern, rel)
        if not m or not m.groups():
            raise UserError(f"--speaker_of {pattern!r} does not match {rel!r} with a group ( ): "
                            f"e.g. --speaker_of='^([^/]+)/'")
        return m.group(1)
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else os.path.splitext(parts[0])[0]


def assign_splits(speakers, val=0.05, test=0.05):
    """{speaker: 'train' | 'val' | 'test'} by the fixed rule in the module docstring."""
    u = {s: int(hashlib.sha1(s.encode()).hexdigest()[:15], 16) / 16 ** 15 for s in speakers}
    split = {s: "val" if v < val else "test" if v < val + test else "train" for s, v in u.items()}
    if len(u) >= 3:
        for name, frac in (("val", val), ("test", test)):
            if frac > 0 and name not in split.values():
                split[min((s for s in u if split[s] == "train"), key=u.get)] = name
    return split


def clip_name(rel):
    """A clip directory name from a path under the root: 'id001/abc/00001.mp4' -> 'id001__abc__00001'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(rel)[0].replace("/", "__"))


def load_boxes(path):
    """--boxes FILE -> {path under root: first-frame box (x, y, w, h) or a list of per-frame boxes}.

    CSV: lines 'path,x,y,w,h' (a header line and '#' comments are skipped) or 'path,boxfile' (a per-frame
    box file from any detector: one 'x,y,w,h' a line, relative to the CSV's folder).
    JSON: {"path": [x, y, w, h] | [[x, y, w, h], ...] | "boxfile"}."""
    check_file(path, "box table")
    here = os.path.dirname(os.path.abspath(path))
    per_file = lambda f: face.load_boxes(f if os.path.isabs(f) else os.path.join(here, f))
    key = lambda k: k.strip().replace("\\", "/").removeprefix("./")       # as find_videos names them
    table = {}
    if path.lower().endswith(".json"):
        try:
            with open(path) as f:
                raw = json.load(f)
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f'{path}: expected an object {{"path under the root": [x, y, w, h], ...}}')
        for k, v in ((key(k), v) for k, v in raw.items()):
            if isinstance(v, str):
                table[k] = per_file(v)
            elif v and isinstance(v[0], (list, tuple)):
                table[k] = [face.parse_box(",".join(map(str, b))) for b in v]
            else:
                table[k] = face.parse_box(",".join(map(str, v)))
        return table
    with open(path) as f:
        for n, line in enumerate(f, 1):
            cells = [c.strip() for c in line.split("#")[0].split(",")]
            cells[0] = key(cells[0])
            if not cells[0] or (n == 1 and cells[0].lower() in ("path", "file", "video")):
                continue
            if len(cells) == 2:
                table[cells[0]] = per_file(cells[1])
            elif len(cells) == 5:
                try:
                    table[cells[0]] = face.parse_box(",".join(cells[1:]))
                except UserError as e:
                    raise UserError(f"{path} line {n}: {e}") from None
            else:
                raise UserError(f"{path} line {n}: expected 'path,x,y,w,h' or 'path,boxfile'")
    return table


def cut_points(level, n, clip, shortest):
    """Frame ranges [(start, end), ...] covering n frames in clips of about `clip` frames: each cut at the
    quietest frame (level: dB per frame) within a quarter clip of its target, so words stay whole; the
    last clip takes the rest (0.5 to 1.5 clips). Ranges shorter than `shortest` are dropped."""
    out, s = [], 0
    while n - s > 1.5 * clip:
        lo, hi = s + int(0.75 * clip), s + int(1.25 * clip)
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

_expert = {}


def _sync_expert(path):
    if path not in _expert:
        from flashsync.checkpoint import load_model
        _expert[path] = load_model(path, "syncnet")
    return _expert[path]


def prepare_video(job):
    """One video -> its record (also written to <out>/prepared/<name>.json). job: dict(root, rel, name,
    speaker, out, resolution, crop, box, clip_seconds, min_seconds, max_offset, syncnet, min_confidence)."""
    from flashsync.audio import fit_length, load_audio
    from flashsync.dataset import dump_json
    path = os.path.join(job["root"], job["rel"])
    rec = dict(path=job["rel"], name=job["name"], speaker=job["speaker"], resolution=job["resolution"], clips=[])
    t0 = time.time()
    try:
        info = video.probe(path)
        if not info.has_audio:
            raise _Skip("no audio", "the file has no audio track")
        if info.duration < job["min_seconds"]:
            raise _Skip("too short", f"{info.duration:.2f} s < --min_seconds {job['min_seconds']}")
        sound = load_audio(path).numpy()
        sound = fit_length(torch.from_numpy(sound), info.frames * SAMPLES_PER_FRAME).numpy()
        level = frame_db(sound)
        segs = cut_points(level, info.frames, round(job["clip_seconds"] * FPS), round(job["min_seconds"] * FPS))
        box, per_frame = job["box"], None
        if job["crop"] == "full":
            s = min(info.width, info.height)
            box = ((info.width - s) / 2, (info.height - s) / 2, s, s)
        elif isinstance(box, list):
            per_frame, box = box, box[0]
        if box is None:
            raise _Skip("no face box", "--crop=box but neither --box nor the --boxes table gives this video's box")
        face.check_box(box, info.width, info.height)
        fixed = job["crop"] == "full"
        names = [job["name"] if len(segs) == 1 else f"{job['name']}_s{i:03d}" for i in range(len(segs))]
        done = [os.path.exists(os.path.join(job["out"], "clips", n, "meta.json")) for n in names]  # a killed run's
        crops, k, lost = [], 0, None
        frames = face.track(video.read_frames(path, info=info), box, [box] if fixed else per_frame, lost=LOST)
        try:
            for i, (frame, b) in enumerate(frames):
                if k == len(segs):
                    break
                if i >= segs[k][0]:
                    crops.append(None if done[k] else face.crop(frame, b, job["resolution"]))
                if i + 1 == segs[k][1]:
                    rec["clips"].append(_finish(job, names[k], crops, sound, segs[k][0], done[k], info, path))
                    crops, k = [], k + 1
        except face.LostFace as err:
            lost = str(err)
            crops = crops[:max(0, err.frame - segs[k][0])]           # only the frames before the loss
        if k < len(segs) and len(crops) >= round(job["min_seconds"] * FPS):    # the last clip, cut short
            rec["clips"].append(_finish(job, names[k], crops, sound, segs[k][0], done[k], info, path))
        if lost:
            rec["lost"] = lost
        if not any(not c.get("skipped") for c in rec["clips"]):
            if any(c.get("skipped") for c in rec["clips"]):
                raise _Skip("out of sync", "every clip: " + rec["clips"][0]["skipped"])
            raise _Skip("box lost", lost) if lost else _Skip("too short", "no clip of --min_seconds was left")
    except _Skip as s:
        rec.update(skipped=s.reason, detail=s.detail)
    except UserError as e:
        rec.update(skipped="unreadable", detail=str(e))
    except Exception as e:          # a file that breaks the decoder in another way: report it, keep going
        rec.update(skipped="unreadable", detail=f"{type(e).__name__}: {e}")
    rec["seconds"] = round(time.time() - t0, 2)
    dump_json(os.path.join(job["out"], "prepared", job["name"] + ".json"), rec)
    return rec


class _Skip(Exception):
    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _finish(job, name, crops, sound, start, done, info, path):
    """Write one clip (unless a killed run finished it) -> its record entry (with `skipped` when the sync
    expert finds it out of sync)."""
    from flashsync.dataset import write_clip
    n = len(crops)
    audio = sound[start * SAMPLES_PER_FRAME:(start + n) * SAMPLES_PER_FRAME]
    speech = int((frame_db(audio) > SPEECH_DB).sum())
    entry = dict(name=name, frames=n, start=start, speech_frames=speech)
    if done:
        return entry
    frames = np.stack(crops)
    if job["max_offset"]:
        from flashsync.syncnet import lse
        r = lse(_sync_expert(job["syncnet"]), frames, audio)
        if abs(r["offset"]) >= job["max_offset"] and r["lse_c"] >= job["min_confidence"]:
            entry.update(skipped=f"audio {r['offset']:+d} frames out of sync (LSE-C {r['lse_c']:.2f})")
            return entry
    meta = dict(source=path, speaker=job["speaker"], start_frame=start, width=info.width, height=info.height,
                resolution=job["resolution"], crop=job["crop"])
    write_clip(job["out"], name, frames, audio, meta)
    return entry


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's: it stops the pool
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the whole tree

def prepare(root, out, resolution, crop="full", box=None, boxes="", workers=1, clip_seconds=10.0, min_seconds=1.0,
            speaker_pattern="", val=0.05, test=0.05, max_offset=0, syncnet="", min_confidence=0.1):
    """Prepare every video under root into the dataset at out; returns the summary dict (also in the report)."""
    from flashsync.dataset import dump_json
    root = os.path.abspath(root)
    videos, other = find_videos(root)
    if not videos:
        raise UserError(f"{root}: no video files under it (looked for {', '.join(sorted(VIDEO_EXT))})")
    if crop not in ("full", "box"):
        raise UserError(f"--crop={crop}: use full (the frame is the face) or box (track --box / --boxes)")
    if max_offset:
        check_file(syncnet, "sync expert checkpoint (--syncnet)")
    table = load_boxes(boxes) if boxes else {}
    speakers = {rel: speaker_of(rel, speaker_pattern) for rel in videos}
    names = {rel: clip_name(rel) for rel in videos}
    if len(set(names.values())) < len(names):
        raise UserError(f"{root}: two videos map to the same clip name (paths that differ only in punctuation "
                        f"or extension); rename one")
    split = assign_splits(sorted(set(speakers.values())), val, test)
    marks = os.path.join(out, "prepared")
    os.makedirs(marks, exist_ok=True)
    _clean(out)
    records = {}
    for rel in videos:
        p = os.path.join(marks, names[rel] + ".json")
        if os.path.exists(p):
            with open(p) as f:
                rec = json.load(f)
            if rec.get("resolution") != resolution:
                raise UserError(f"{out} was prepared at {rec.get('resolution')} px, not {resolution} px; "
                                f"use another --out_dir")
            records[rel] = rec
    jobs = [dict(root=root, rel=rel, name=names[rel], speaker=speakers[rel], out=out, resolution=resolution,
                 crop=crop, box=table.get(rel, box), clip_seconds=clip_seconds, min_seconds=min_seconds,
                 max_offset=max_offset, syncnet=syncnet, min_confidence=min_confidence)
            for rel in videos if rel not in records]
    print(f"{len(videos)} videos of {len(split)} speakers under {root}: {len(records)} already prepared, "
          f"{len(jobs)} to go with {workers} worker{'s' * (workers > 1)}", flush=True)
    t0, last, frames = time.time(), time.time(), 0
    pool = multiprocessing.get_context("spawn").Pool(workers, _worker_init) if workers > 1 and jobs else None
    try:
        results = pool.imap_unordered(prepare_video, jobs) if pool else map(prepare_video, jobs)
        for i, rec in enumerate(results, 1):
            records[rec["path"]] = rec
            frames += sum(c["frames"] for c in rec["clips"])
            el = time.time() - t0
            print(f"\r{i}/{len(jobs)} videos, {i / el:.2f} videos/s, {frames / el:.0f} frames/s, "
                  f"ETA {(len(jobs) - i) * el / i / 60:.1f} min ", end="", flush=True)
            if time.time() - last > 30:      # a usable index while it runs
                _write(out, root, records, split, resolution, other)
                last = time.time()
    except KeyboardInterrupt:
        if pool:
            pool.terminate()
        _write(out, root, records, split, resolution, other)
        raise UserError(f"interrupted after {len(records)} of {len(videos)} videos; the same command resumes") from None
    finally:
        if pool:
            pool.close()
            pool.join()
    el = time.time() - t0
    summary = _write(out, root, records, split, resolution, other)
    summary.update(seconds=round(el, 1), videos_per_second=round(len(jobs) / el, 3) if jobs else None,
                   frames_per_second=round(frames / el, 1) if jobs else None, workers=workers)
    dump_json(_report_path(out, root), dict(summary, skipped=_skipped(records)))
    return summary


def _clean(out):
    """Remove what a killed run left half-written: atomic_path's temporaries (.name.*.tmp*)."""
    for d in (os.path.join(out, "clips"), os.path.join(out, "prepared"), out):
        if os.path.isdir(d):
            for f in os.listdir(d):
                if f.startswith(".") and ".tmp" in f:
                    p = os.path.join(d, f)
                    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def _report_path(out, root):
    return os.path.join(out, os.path.basename(os.path.normpath(root)) + "_report.json")


def _skipped(records):
    """Every video or clip not kept, with its reason, sorted by path."""
    out = []
    for rel, r in sorted(records.items()):
        if r.get("skipped"):
            out.append(dict(path=rel, reason=r["skipped"], detail=r.get("detail", "")))
        for c in r["clips"]:
            if c.get("skipped"):
                out.append(dict(path=rel, clip=c["name"], reason="out of sync", detail=c["skipped"]))
        if r.get("lost") and r["clips"]:
            out.append(dict(path=rel, reason="box lost", detail=r["lost"] + "; the clips before it are kept"))
    return out


def _write(out, root, records, split, resolution, other):
    """The index (from the records) and the report; -> the summary."""
    from flashsync.dataset import dump_json, write_index
    clips = [dict(name=c["name"], split=split[r["speaker"]], frames=c["frames"], speaker=r["speaker"],
                  source=r["path"]) for r in records.values() for c in r["clips"] if not c.get("skipped")]
    if clips:
        write_index(out, clips, resolution, merge=False)
    skipped = _skipped(records)
    reasons = {}
    for s in skipped:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    kept = [c for r in records.values() for c in r["clips"] if not c.get("skipped")]
    speech = sum(c["speech_frames"] for c in kept)
    spk = {s: len({c["speaker"] for c in clips if c["split"] == s}) for s in ("train", "val", "test")}
    summary = dict(root=root, videos=len(records), clips=len(clips), hours=round(sum(c["frames"] for c in kept) / FPS / 3600, 4),
                   speech_hours=round(speech / FPS / 3600, 4), speakers=spk,
                   clips_per_split={s: sum(c["split"] == s for c in clips) for s in ("train", "val", "test")},
                   skipped_by_reason=reasons, other_files=other)
    dump_json(_report_path(out, root), dict(summary, skipped=skipped))
    return summary


def print_summary(s, out, root):
    print(f"\n{s['clips']} clips from {s['videos']} videos: {s['hours']:.3f} h kept, {s['speech_hours']:.3f} h of it "
          f"speech; speakers train/val/test {s['speakers']['train']}/{s['speakers']['val']}/{s['speakers']['test']}")
    for reason, n in sorted(s["skipped_by_reason"].items()):
        print(f"  skipped, {reason}: {n}")
    if s.get("frames_per_second"):
        print(f"  {s['videos_per_second']:.2f} videos/s, {s['frames_per_second']:.0f} frames/s with {s['workers']} "
              f"worker{'s' * (s['workers'] > 1)} in {s['seconds']:.0f} s")
    print(f"index: {out}/index.json, report (every skipped file and why): {_report_path(out, root)}")

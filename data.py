"""Make datasets in the flashsync clip format (see flashsync/dataset.py).

    python data.py synth [config/<name>.py] [--key=value ...]
        SynthTalk clips, split train/val/test by identity.
    python data.py video PATH [PATH ...] --box x,y,w,h [--audio FILE] [--key=value ...]
        real videos: the face box is tracked through each video, cropped to
        resolution x resolution at 25 fps, with 16 kHz audio from the file's own
        track or from --audio (trimmed or padded to the video's length).
    python data.py videos ROOT [--crop=full|box] [--boxes=TABLE] [--workers=N] [--key=value ...]
        a dataset tree (LRS3 / VoxCeleb2 speaker/clip folders, HDTF long videos; also
        `data.py video DIR`): every video under ROOT, split by speaker, long ones cut at
        silences, in parallel and resumably (run the same command again after an
        interruption); what was skipped and why in <out_dir>/<ROOT>_report.json. See
        flashsync/prepare.py.
"""
import os
import time

import numpy as np
import torch

from flashsync import FPS, SAMPLES_PER_FRAME
from flashsync.config import configure
from flashsync.util import UserError, run_main

# -----------------------------------------------------------------------------
# defaults: override with config/<name>.py or --key=value
out_dir = ""                 # default: data/synth for synth, data/video for video, data/videos for videos
resolution = 64              # crop size R (64 for the CPU demo; 128 or 256 on a GPU)
seed = 0                     # synth: which speech, emotion, motion and occluders each clip gets
# synth
identities = 200             # identity i goes to train/val/test by i % 10 (8/1/1)
clips_per_identity = 2       # clips of each identity (different speech, emotion, motion)
seconds = 6.0                # per clip
occluder_prob = 0.25         # chance a clip has a hand or microphone crossing the face
nsv = 0.3                    # chance each speech event is a laugh or a sigh instead
# video
box = ""                     # x,y,w,h face box in the first frame (pixels)
boxes = ""                   # or a text file with one box per frame (from any detector); videos: a CSV/JSON
                             # table of boxes per video (path,x,y,w,h or path,boxfile: see prepare.load_boxes)
audio = ""                   # speech to use instead of the video's own audio track
split = "train"              # split the clips of real videos go to (videos: by speaker, see below)
# videos (a tree)
crop = ""                    # full: the whole frame is the face (LRS3, VoxCeleb2); box: track --box / --boxes
                             # (default: box when either is given, else full)
workers = 1                  # processes preparing videos at once (the cores you can spare)
clip_seconds = 10.0          # longer videos are cut into clips of about this length, at silences
min_seconds = 1.0            # shorter videos (and ends of videos) are skipped
speaker_of = ""              # regex whose group 1 is the speaker in a path under ROOT (default: its first folder)
val_fraction = 0.05          # of the speakers (by a hash of the name: see prepare.py), at least one of 3 or more
test_fraction = 0.05
max_offset = 0               # skip clips the sync expert (--syncnet) finds this many frames or more out of sync (0: off)
# sync
syncnet = "out/syncnet/ckpt.pt"   # the sync expert that checks a dataset
fix = False                  # shift the audio of clips found out of sync
min_confidence = 0.1         # LSE-C below this: the offset is a guess, leave the clip alone
# -----------------------------------------------------------------------------


def make_synth(root):
    from flashsync import synth
    from flashsync.dataset import write_clip, write_index
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    rng = np.random.default_rng(seed)
    clips, t0, done = [], time.time(), 0
    total = identities * clips_per_identity
    for ident in range(identities):
        for k in range(clips_per_identity):
            name = f"id{ident:05d}_{k:02d}"
            clip = synth.make_clip(ident, seed * 1000 + k, seconds=seconds, res=resolution,
                                   occluder=bool(rng.random() < occluder_prob), nsv=nsv)
            meta = dict(source="synthtalk", **clip["meta"], gt=clip["gt"])
            write_clip(root, name, clip["video"], clip["audio"], meta, occluder=clip["occluder"])
            clips.append(dict(name=name, split=clip["meta"]["split"], frames=len(clip["video"]), source="synthtalk"))
            done += 1
            if done % 20 == 0 or done == total:
                rate = done * len(clip["video"]) / (time.time() - t0)
                print(f"\r{done}/{total} clips, {rate:.0f} frames/s", end="", flush=True)
    write_index(root, clips, resolution)
    print(f"\nwrote {len(clips)} clips to {root}")


def make_video(root, paths):
    from flashsync import face, video
    from flashsync.audio import fit_length, load_audio
    from flashsync.dataset import write_clip, write_index
    from flashsync.util import check_file
    if not paths:
        raise UserError("give one or more video files: python data.py video PATH... --box x,y,w,h")
    if not box and not boxes:
        raise UserError("give the face box: --box x,y,w,h (pixels, first frame) or --boxes FILE (one per frame)")
    per_frame = face.load_boxes(boxes) if boxes else None
    first = face.parse_box(box) if box else per_frame[0]
    if audio:
        check_file(audio, "audio file")
    infos = []
    for path in paths:   # check every input before writing anything
        info = video.probe(path)
        if not audio and not info.has_audio:
            raise UserError(f"{path} has no audio track; give the speech with --audio FILE")
        face.check_box(first, info.width, info.height)
        infos.append(info)
    clips = []
    for path, info in zip(paths, infos):
        name = os.path.splitext(os.path.basename(path))[0]
        sound = load_audio(audio or path)
        # crops go straight to a memory-mapped file, so RAM stays flat however long the video
        os.makedirs(root, exist_ok=True)
        scratch = os.path.join(root, f".{name}.frames.tmp.npy")
        crops = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8,
                                          shape=(info.frames + 1, resolution, resolution, 3))
        track, n, t0 = [], 0, time.time()
        try:
            for frame, b in face.track(video.read_frames(path), first, per_frame):
                if n == len(crops):
                    break
                crops[n] = face.crop(frame, b, resolution)
                track.append([round(float(v), 2) for v in b])
                n += 1
                if n % 100 == 0:
                    print(f"\r{name}: {n}/{info.frames} frames, {n / (time.time() - t0):.0f} fps", end="", flush=True)
            sound = fit_length(sound, n * SAMPLES_PER_FRAME)   # trim, or pad with silence
            meta = dict(source=os.path.abspath(path), audio=os.path.abspath(audio or path), width=info.width,
                        height=info.height, resolution=resolution, boxes=track)
            write_clip(root, name, crops[:n], sound.numpy(), meta)
        finally:
            del crops
            os.remove(scratch)
        clips.append(dict(name=name, split=split, frames=n, source=os.path.abspath(path)))
        print(f"\r{name}: {n} frames at {FPS} fps, {n / FPS:.1f} s -> {root}/clips/{name}")
    write_index(root, clips, resolution)


def make_videos(root, tree):
    from flashsync.face import parse_box
    from flashsync.prepare import prepare, print_summary
    if len(tree) != 1:
        raise UserError("give one folder: python data.py videos ROOT [--workers=N] ...")
    if workers < 1:
        raise UserError(f"--workers={workers}: give 1 or more")
    options = dict(resolution=resolution, crop=crop or ("box" if box or boxes else "full"), clip_seconds=clip_seconds,
                   min_seconds=min_seconds, max_offset=max_offset, syncnet=syncnet if max_offset else "",
                   min_confidence=min_confidence if max_offset else 0.0)
    print_summary(prepare(tree[0], root, options, box=parse_box(box) if box else None, boxes=boxes, workers=workers,
                          speaker_pattern=speaker_of, val=val_fraction, test=test_fraction))


def check_sync(root):
    """Print each clip's offset, LSE-D and LSE-C; with --fix, shift confident offsets into sync."""
    from flashsync.audio import save_audio
    from flashsync.checkpoint import load_model
    from flashsync.dataset import dump_json, load_clip, read_index
    from flashsync.syncnet import lse, shift_audio
    expert = load_model(syncnet, "syncnet")
    print("| clip | offset (frames, + = audio late) | LSE-D | LSE-C | action |")
    print("|---|---|---|---|---|")
    for c in read_index(root)["clips"]:
        frames, audio, meta, _ = load_clip(root, c["name"])
        r = lse(expert, np.asarray(frames), np.asarray(audio))
        action = "in sync"
        if r["offset"] != 0 and r["lse_c"] < min_confidence:
            action = "unsure, left alone"
        elif r["offset"] != 0 and fix:
            d = os.path.join(root, "clips", c["name"])
            save_audio(os.path.join(d, "audio.wav"), shift_audio(np.asarray(audio), -r["offset"]))
            dump_json(os.path.join(d, "meta.json"), dict(meta, audio_shift=meta.get("audio_shift", 0) - r["offset"]))
            action = f"audio moved {-r['offset']:+d} frames"
        elif r["offset"] != 0:
            action = "out of sync (--fix shifts it)"
        print(f"| {c['name']} | {r['offset']:+d} | {r['lse_d']:.3f} | {r['lse_c']:.3f} | {action} |", flush=True)


def main():
    args = configure(globals())
    if not args or args[0] not in ("synth", "video", "videos", "sync"):
        raise UserError("usage: python data.py synth [--key=value ...] | python data.py video PATH... --box x,y,w,h"
                        " | python data.py videos ROOT [--workers=N] | python data.py sync [DIR] [--fix]")
    if args[0] == "synth":
        make_synth(out_dir or "data/synth")
    elif args[0] == "videos" or (args[0] == "video" and len(args) == 2 and os.path.isdir(args[1])):
        make_videos(out_dir or "data/videos", args[1:])
    elif args[0] == "video":
        make_video(out_dir or "data/video", args[1:])
    else:
        check_sync(args[1] if len(args) > 1 else "data/video")


if __name__ == "__main__":
    run_main(main)

"""KeyFace's table in `python -m flashsync.eval` (DESIGN.md §5): one face image animated by speech.

    sync        r between the reader's mouth opening and the driving speech's true opening, on the
                driving clip's speech frames (another test identity's speech)
    drift       PSNR of the face above the mouth vs the identity image, per 10 s of a 60 s
                generation: the first and the last bucket, with keyframes and without (the
                ablation: keyframe chunks one after another, each given the last keyframe before)
    events      the audio-event encoder's frame accuracy per class on the test clips
"""
import time

import numpy as np
import torch

from flashsync import FPS, metrics, synth
from flashsync.checkpoint import load_model
from flashsync.events import CLASSES, accuracy
from flashsync.keyface import Animator
from flashsync.speech import SPEECH

ABOVE_MOUTH = (0.0, 0.0, 1.0, 0.55)    # the crop above the mouth box's top (face.MOUTH starts at 0.60)


def drift(frames, identity, seconds=10):
    """PSNR (dB) of the region above the mouth vs the identity crop, per `seconds` bucket -> list."""
    step = seconds * FPS
    return [metrics.region_psnr(frames[i:i + step], np.broadcast_to(identity, frames[i:i + step].shape), ABOVE_MOUTH)
            for i in range(0, len(frames), step)]


def keyface_tables(key_path, interp_path, clips, steps=10, s_audio=4.0, seconds=60, n_sync=8):
    """KeyFace's numbers on the SynthTalk test clips -> dict (also printed)."""
    t0 = time.time()
    key, interp = load_model(key_path, "keyface"), load_model(interp_path, "keyface")
    anim = Animator(key, interp, steps, 1.0, s_audio)
    out = {}
    # sync: each test identity's first frame, driven by another test identity's speech
    from flashsync.eval import driver_of
    opened, truth = [], []
    picks = np.linspace(0, len(clips) - 1, min(n_sync, len(clips))).round().astype(int)
    for i in picks:
        drv = clips[driver_of(clips, i)]
        frames = np.stack(list(anim.run(clips[i]["frames"][0], drv["audio"])))
        speaking = np.asarray(drv["gt"]["label"])[:len(frames)] == SPEECH
        opened.append(metrics.opening(frames)[speaking])
        truth.append(np.asarray(drv["gt"]["open"])[:len(frames)][speaking])
    out["sync_r"] = metrics.pearson(np.concatenate(opened), np.concatenate(truth))
    # drift over a long generation, with keyframes and without
    ident = clips[picks[0]]["frames"][0]
    speaker = clips[driver_of(clips, picks[0])]["meta"]["identity"]
    audio = synth.make_clip(speaker, 7, seconds=seconds, res=key.cfg.resolution)["audio"]
    for name, joint in (("keyframes", True), ("no keyframes", False)):
        frames = np.stack(list(anim.run(ident, audio, joint_keys=joint)))
        buckets = drift(frames, ident)
        out[f"drift ({name})"] = dict(first=buckets[0], last=buckets[-1], buckets=buckets)
    per, _ = accuracy(key.events, clips)
    out["events"] = per
    print(f"\nKeyFace ({key_path}, {interp_path}; {steps} Euler steps, s_audio {s_audio}):")
    print(f"sync: r = {out['sync_r']:.3f} between the read opening and the driving truth on the speech frames "
          f"of {len(picks)} test faces driven by other test identities")
    print(f"identity over {seconds} s (PSNR above the mouth vs the image, per 10 s):")
    print("| keyframe chunks | first 10 s | last 10 s | change |\n|---|---|---|---|")
    for name in ("keyframes", "no keyframes"):
        d = out[f"drift ({name})"]
        print(f"| {'denoised together (KeyFace)' if name == 'keyframes' else 'one after another (ablation)'} | "
              f"{d['first']:.2f} | {d['last']:.2f} | {d['last'] - d['first']:+.2f} |")
    print("audio events, frame accuracy per class on the test clips: " +
          ", ".join(f"{c} {100 * per[c]:.1f} %" for c in CLASSES))
    print(f"({time.time() - t0:.0f} s)")
    return out


@torch.no_grad()
def events_report(path, clips):
    """The audio-event encoder alone: per-class frame accuracy and the confusion counts."""
    per, confusion = accuracy(load_model(path, "events"), clips)
    print(f"\naudio events ({path}), frame accuracy per class on {len(clips)} test clips:")
    print("| class | accuracy | frames |\n|---|---|---|")
    for i, c in enumerate(CLASSES):
        print(f"| {c} | {100 * per[c]:.1f} % | {confusion[i].sum()} |")
    return dict(accuracy=per, confusion=confusion.tolist())

"""The diffusion methods' tables in `python -m flashsync.eval` (DESIGN.md §5).

KeySync (keysync_tables): its rows in the suite beside FlashLips on the test clips with an occluder
and as many without (true masks; no guidance), then on the occluded clips the segmenter's masks,
the occluder as decoded, no occlusion handling, and the segmenter's IoU (see eval.py's docstring).

KeyFace (keyface_tables), one face image animated by speech:
    sync        r between the reader's mouth opening and the driving speech's true opening, on the
                driving clip's speech frames (another test identity's speech)
    nsv         the audio's laugh and sigh frames read as laughs and sighs (expression.read_events) on
                faces driven by laugh- and sigh-rich speech of other test identities (synth nsv 0.6, 8 s
                each: ~300 laugh and ~300 sigh frames over 10 clips; the sync clips hold a handful of
                events, and one sigh more or less moved the rate by 10 points); also on the speakers' own
                frames (the reader's check) and on their autoencoder reconstructions (what a latent
                model can show at best)
    emotion     r between asked-for and read valence, and arousal, within each face, over a 3 x 3
                grid of held emotions (expression.emotion_r)
    drift       PSNR of the face above the mouth vs the identity image, per 10 s of a 60 s
                generation: the first and the last bucket, with keyframes and without (the
                ablation: keyframe chunks one after another, each conditioned on the last keyframe before)
    events      the audio-event encoder's frame accuracy per class on the test clips
"""
import time

import numpy as np
import torch

from flashsync import FPS, SAMPLES_PER_FRAME, expression, metrics, synth
from flashsync.checkpoint import load_checkpoint, load_model
from flashsync.eval import METHODS_FIXED, driver_of, suite, table
from flashsync.events import CLASSES, accuracy
from flashsync.keyface import Animator
from flashsync.keysync import Dubber
from flashsync.nn import to_float, to_uint8
from flashsync.occluder import iou
from flashsync.speech import SPEECH
from flashsync.util import UserError

def keysync(dub, masks="truth", segmenter=None, hold=True):
    """A KeySync method for the suite: (clip, audio, mouth, seed) -> the generated crops (not pasted, like
    FlashLips'). masks: "truth" (SynthTalk's occluder masks), "segmenter" or "none" (no occlusion handling);
    hold: the occluder's pixels are the source's, as sample.py pastes them (False: as decoded)."""
    def run(clip, audio, mouth, seed):
        frames = clip["frames"]
        occ = clip["occluder"] if masks == "truth" else None
        if masks == "segmenter":
            occ = np.concatenate([segmenter.masks(frames[i:i + 256]).numpy() for i in range(0, len(frames), 256)])
        dub.seed = seed
        dub.set_reference(frames[0])
        n = -(-len(audio) // 640)
        out = np.stack([out for _, out, _ in dub.run(iter(frames[:n]), None if occ is None else iter(occ), audio)])
        return np.where(occ[:n, ..., None], frames[:n], out) if hold and occ is not None else out
    return run


def keysync_tables(paths, seg_path, flash, clips, expert, ks_steps=10, s_ref=1.0, s_audio=4.0):
    """KeySync's rows beside FlashLips (`flash`, the first FlashLips method) on the clips with an occluder
    and as many without; then the occlusion ablations on the occluded clips and the segmenter's IoU."""
    key, interp = (load_model(p, "keysync") for p in _video_pair(paths))
    dub = Dubber(key, interp, ks_steps, s_ref, s_audio)
    bare = Dubber(key, interp, ks_steps, 1.0, 1.0)
    seg = load_model(seg_path, "occluder") if seg_path else None
    occluded = [c for c in clips if c["occluder"] is not None]
    plain = [c for c in clips if c["occluder"] is None]
    plain = plain[::max(1, len(plain) // max(1, len(occluded)))][:max(1, len(occluded))]
    chosen = sorted(occluded + plain, key=lambda c: c["name"])
    keys = ["psnr", "mouth_psnr", "recon_r", "r_driving", "r_source", "lipleak", "lse_d", "lse_c", "lipscore",
            "id_psnr", "flicker", "occ_psnr"]
    flash = {"FlashLips": flash} if flash else {}
    methods = {**flash, "KeySync": keysync(dub), "KeySync (no guidance)": keysync(bare), **METHODS_FIXED}
    rows = suite(methods, chosen, expert)
    print(f"\nKeySync ({', '.join(paths)}; {ks_steps} Euler steps, s_ref {s_ref}, s_audio {s_audio}) on "
          f"{len(chosen)} test clips ({len(occluded)} with an occluder), true occluder masks:")
    print(table(rows, [k for k in keys if any(k in r for r in rows.values())]))
    out = dict(suite=rows)
    if occluded:
        occ_methods = {**flash, "KeySync (true masks)": keysync(dub),
                       "KeySync (true masks, occluder as decoded)": keysync(dub, hold=False),
                       **({"KeySync (segmenter masks)": keysync(dub, "segmenter", seg)} if seg else {}),
                       "KeySync (no occlusion handling)": keysync(dub, "none")}
        out["occlusion"] = suite(occ_methods, occluded, expert, cross_only=True)
        print(f"\nOcclusion ({len(occluded)} test clips with a hand or microphone):")
        print(table(out["occlusion"], ["r_driving", "r_source", "id_psnr", "occ_psnr", "occ_pooled"]))
        if seg:
            pred = np.concatenate([seg.masks(c["frames"]).numpy() for c in occluded])
            out["segmenter_iou"] = iou(pred, np.concatenate([c["occluder"] for c in occluded]))
            print(f"occlusion segmenter ({seg_path}): IoU {out['segmenter_iou']:.3f} on those clips' frames")
    return out


def _video_pair(paths, kind="keysync"):
    """The keyframe and interpolation checkpoints among KeySync's (or KeyFace's) -> (key path, interp path)."""
    found = {load_checkpoint(p, kind)["config"]["interp"]: p for p in paths}
    if set(found) != {False, True}:
        raise UserError(f"{kind} needs both its models in --ckpt: the keyframe and the interpolation checkpoint")
    return found[False], found[True]


ABOVE_MOUTH = (0.0, 0.0, 1.0, 0.55)    # the crop above the mouth box's top (face.MOUTH starts at 0.60)


def drift(frames, identity, seconds=10):
    """PSNR (dB) of the region above the mouth vs the identity crop, per `seconds` bucket -> list."""
    step = seconds * FPS
    return [metrics.region_psnr(frames[i:i + step], np.broadcast_to(identity, frames[i:i + step].shape), ABOVE_MOUTH)
            for i in range(0, len(frames), step)]


def nsv_readings(anim, clips, n=10, seconds=8.0):
    """Laughs and sighs of laugh- and sigh-rich speech (synth nsv 0.6) of other test identities, read off the
    faces KeyFace (anim, an Animator) makes of n test clips' first frames, off the speakers' own frames and
    off their autoencoder reconstructions -> dict of expression.recall dicts and the event frame counts."""
    key, read, target = anim.key, {"generated": [], "own": [], "autoencoder": []}, []
    for k, i in enumerate(np.linspace(0, len(clips) - 1, min(n, len(clips))).round().astype(int)):
        speaker = clips[driver_of(clips, i)]["meta"]["identity"]
        drv = synth.make_clip(speaker, 3000 + k, seconds=seconds, res=key.cfg.resolution, nsv=0.6)
        frames = np.stack(list(anim.run(clips[i]["frames"][0], drv["audio"])))
        own = drv["video"][:len(frames)]
        with torch.no_grad():
            rec = to_uint8(key.ae.decode(key.ae.encode(to_float(torch.as_tensor(own)))).float()).numpy()
        for name, v in (("generated", frames), ("own", own), ("autoencoder", rec)):
            read[name].append(expression.read_events(v))
        target.append(expression.events_truth(drv["gt"]["label"])[:len(frames)])
    target = np.concatenate(target)
    recall = lambda name: expression.recall(np.concatenate(read[name]), target)
    return {"nsv": recall("generated"), "nsv (reader on the speakers' own frames)": recall("own"),
            "nsv (reader on their autoencoder reconstructions)": recall("autoencoder"),
            "nsv frames": dict(laugh=int((target == 1).sum()), sigh=int((target == 2).sum()), faces=k + 1)}


def keyface_tables(key_path, interp_path, clips, steps=10, s_audio=4.0, s_nsv=16.0, seconds=60, n_sync=8,
                   n_emotion=8, emotion_seconds=3, n_nsv=10, nsv_seconds=8.0):
    """KeyFace's numbers on the SynthTalk test clips -> dict (also printed)."""
    t0 = time.time()
    key, interp = load_model(key_path, "keyface"), load_model(interp_path, "keyface")
    anim = Animator(key, interp, steps, 1.0, s_audio, s_nsv=s_nsv)
    out = {}
    # sync: each test identity's first frame, driven by another test identity's speech
    opened, truth = [], []
    picks = np.linspace(0, len(clips) - 1, min(n_sync, len(clips))).round().astype(int)
    for i in picks:
        drv = clips[driver_of(clips, i)]
        frames = np.stack(list(anim.run(clips[i]["frames"][0], drv["audio"])))
        speaking = np.asarray(drv["gt"]["label"])[:len(frames)] == SPEECH
        opened.append(metrics.opening(frames)[speaking])
        truth.append(np.asarray(drv["gt"]["open"])[:len(frames)][speaking])
    out["sync_r"] = metrics.pearson(np.concatenate(opened), np.concatenate(truth))
    out.update(nsv_readings(anim, clips, n_nsv, nsv_seconds))
    # emotion control: each face asked for every expression.GRID emotion over the same speech
    feats, asked, faces = [], [], []
    for i in picks[:n_emotion]:
        audio = clips[driver_of(clips, i)]["audio"][:emotion_seconds * FPS * SAMPLES_PER_FRAME]
        n = len(audio) // SAMPLES_PER_FRAME
        for va in expression.GRID:
            frames = np.stack(list(anim.run(clips[i]["frames"][0], audio, np.tile(np.float32(va), (n, 1)))))
            feats.append(expression.emotion_features(frames))
            asked.append(va)
            faces.append(i)
    out["emotion_r"] = dict(zip(("valence", "arousal"), expression.emotion_r(feats, asked, faces)))
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
    print(f"\nKeyFace ({key_path}, {interp_path}; {steps} Euler steps, s_audio {s_audio}, s_nsv {s_nsv}):")
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
    e = out["emotion_r"]
    print(f"emotion control: r(asked, read) valence {e['valence']:.3f}, arousal {e['arousal']:.3f} within each face "
          f"({min(n_emotion, len(picks))} test faces x {len(expression.GRID)} emotions x {emotion_seconds} s; "
          f"expression.read_face)")
    f = out["nsv frames"]
    print(f"laughs / sighs in the audio ({f['laugh']} / {f['sigh']} frames of {f['faces']} faces) read as such on")
    for name, rec in (("generated", out["nsv"]), ("the speakers' own frames", out["nsv (reader on the speakers' own frames)"]),
                      ("their autoencoder reconstructions", out["nsv (reader on their autoencoder reconstructions)"])):
        print(f"  {name}: laugh {100 * rec['laugh']:.1f} %, sigh {100 * rec['sigh']:.1f} % "
              f"(other frames read as neither: {100 * rec['other']:.1f} %)")
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

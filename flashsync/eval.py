"""Evaluation on SynthTalk test identities (DESIGN.md §5). Every number is reproducible by one command:

    python -m flashsync.eval --ae=out/ae/ckpt.pt --editor=out/editor/ckpt.pt --refine=out/refine/ckpt.pt

FlashLips stage 1 (the editor driven by a donor's lips vector):
  ae_psnr        autoencoder reconstruction PSNR of test frames
  lips_r         Pearson r between the analytic reader's opening on the output and the
                 donor frame's true opening (donor: another clip of the same identity)
  outside_db     PSNR outside the lower-face box (output vs source) minus the same for the
                 AE reconstruction: 0 means the edit left the rest of the face as the AE does
  outside_change mean absolute pixel change outside the lower-face box vs the source (0-255)
  colour_shift   with a donor of another identity: relative change of the lower-face box's
                 mean colour vs the AE reconstruction (identity must not travel in the vector)
"""
import json

import numpy as np
import torch

from flashsync import face, synth
from flashsync.autoencoder import psnr
from flashsync.checkpoint import load_model
from flashsync.config import configure
from flashsync.dataset import load_clip, read_index
from flashsync.lipsync import LipSync
from flashsync.nn import to_float, to_uint8
from flashsync.util import UserError, run_main


def test_clips(data_dir):
    """Test-split clips grouped by identity: {identity: [(frames, meta, audio), ...]}."""
    groups = {}
    for c in read_index(data_dir)["clips"]:
        if c["split"] == "test":
            frames, audio, meta, _ = load_clip(data_dir, c["name"])
            groups.setdefault(meta.get("identity", c["name"]), []).append((frames, meta, audio))
    if not groups:
        raise UserError(f"{data_dir} has no test clips")
    return groups


def _pairs(groups, n, rng, same_identity=True):
    """n (source frame, refs, donor frame, donor true opening) tuples."""
    ids = sorted(k for k, v in groups.items() if len(v) >= 2) if same_identity else sorted(groups)
    out = []
    for i in range(n):
        ident = ids[i % len(ids)]
        (src, _, _), donor_clip = groups[ident][0], groups[ident][1]
        if not same_identity:
            donor_clip = groups[ids[(i + 1 + rng.integers(len(ids) - 1)) % len(ids)]][0]
        t = int(rng.integers(len(src)))
        refs = sorted(int(r) for r in rng.choice([k for k in range(len(src)) if abs(k - t) > 2], 4, replace=False))
        d = int(rng.integers(len(donor_clip[0])))
        out.append((src[t], src[refs], donor_clip[0][d], donor_clip[1]["gt"]["open"][d]))
    return out


@torch.no_grad()
def editor_report(editor, ae, data_dir, n=200, seed=0, masked=True, batch=50):
    """Lips control, outside-box fidelity and identity leakage of an Editor (masked) or Refiner (mask-free)."""
    groups = test_clips(data_dir)
    rng = np.random.default_rng(seed)
    base = editor.teacher if hasattr(editor, "teacher") else editor
    outside = 1 - face.region_mask(face.LOWER_FACE, base.cfg.resolution)        # (R, R)
    res = dict(open=[], donor=[], out_psnr=[], ae_psnr_out=[], change=[], colour=[])
    for same in (True, False):
        pairs = _pairs(groups, n, rng, same)
        for i in range(0, n, batch):
            chunk = pairs[i:i + batch]
            src = torch.from_numpy(np.stack([c[0] for c in chunk]))
            refs = torch.from_numpy(np.stack([c[1] for c in chunk]))
            p = base.lips(to_float(torch.from_numpy(np.stack([c[2] for c in chunk]))))
            z = editor.edit(src, refs, p) if hasattr(editor, "teacher") else editor.edit(src, refs, p, masked=masked)
            y = ae.decode(z).clamp(-1, 1)
            x = to_float(src)
            rec = ae.decode(ae.encode(x)).clamp(-1, 1)
            if same:
                res["open"] += list(synth.read_mouth(to_uint8(y).numpy())["open"])
                res["donor"] += [c[3] for c in chunk]
                res["out_psnr"] += list(psnr(y * outside, x * outside).numpy())
                res["ae_psnr_out"] += list(psnr(rec * outside, x * outside).numpy())
                res["change"] += list(((y - x).abs() * outside).sum((1, 2, 3)).div(outside.sum() * 3).mul(127.5).numpy())
            else:
                lower = face.region_mask(face.LOWER_FACE, base.cfg.resolution)
                mean = lambda im: ((im + 1) / 2 * lower).sum((2, 3)) / lower.sum()    # (B, 3) in [0, 1]
                res["colour"] += list(((mean(y) - mean(rec)).abs() / (mean(rec).abs() + 1e-3)).max(1).values.numpy())
    return dict(lips_r=float(np.corrcoef(res["open"], res["donor"])[0, 1]),
                outside_db=float(np.mean(res["out_psnr"]) - np.mean(res["ae_psnr_out"])),
                outside_change=float(np.mean(res["change"])),
                colour_shift=float(np.mean(res["colour"])))


@torch.no_grad()
def ae_report(ae, data_dir, n=500):
    frames = np.concatenate([f for clips in test_clips(data_dir).values() for f, _, _ in clips])
    x = to_float(torch.from_numpy(frames[np.linspace(0, len(frames) - 1, n).astype(int)]))
    return dict(ae_psnr=float(psnr(ae.decode(ae.encode(x)), x).mean()))


def flashlips_report(lips, data_dir, steps=6, lookahead=-1, seed=0):
    """Audio-driven FlashLips (a LipSync, exactly as sample.py runs it) on test identities: each source
    clip is driven by the audio of another identity's clip (cross-sync) and by silence (LipLeak)."""
    groups = test_clips(data_dir)
    ids = sorted(groups)
    read, drive_open, src_open, leak = [], [], [], []
    for i, ident in enumerate(ids):
        src, smeta, _ = groups[ident][0]
        drv, dmeta, daudio = groups[ids[(i + 1) % len(ids)]][0]
        t = min(len(src), len(drv))
        frames = torch.from_numpy(np.array(src[:t]))
        lips.set_reference(frames[torch.linspace(0, t - 1, 4).long()])
        for audio, sink in ((torch.from_numpy(daudio[:t * 640]), read), (torch.zeros(t * 640), leak)):
            p = lips.poses(audio, steps, seed + i, lookahead)
            sink.append(synth.read_mouth(lips.edit(frames, p).numpy())["open"])
        drive_open.append(np.asarray(dmeta["gt"]["open"][:t]))
        src_open.append(np.asarray(smeta["gt"]["open"][:t]))
    r = np.concatenate(read)
    return dict(r_driving=float(np.corrcoef(r, np.concatenate(drive_open))[0, 1]),
                r_source=float(np.corrcoef(r, np.concatenate(src_open))[0, 1]),
                lipleak=float((np.concatenate(leak) > synth.OPEN_THRESHOLD).mean()))


# -----------------------------------------------------------------------------
data_dir = "data/synth"
ae = ""
editor = ""
refine = ""
pose = ""
steps = 6                # Euler steps of the pose sampler
lookahead = 2            # streaming lookahead in frames, evaluated beside offline (-1: offline only)
pairs = 200
out = ""                 # optional JSON file for the numbers
# -----------------------------------------------------------------------------


def main():
    configure(globals())
    torch.manual_seed(0)
    rows = {}
    if ae:
        rows["autoencoder"] = ae_report(load_model(ae, "ae"), data_dir)
    if editor:
        ed = load_model(editor, "editor")
        rows["editor (masked)"] = editor_report(ed, ed.ae, data_dir, pairs)
    if refine:
        rf = load_model(refine, "refine")
        rows["editor (mask-free)"] = editor_report(rf, rf.teacher.ae, data_dir, pairs)
    if pose:
        if not (refine or editor):
            raise UserError("--pose needs an editor to drive: give --refine (mask-free) or --editor")
        lips = LipSync.load(refine or editor, pose)
        for la in sorted({-1, lookahead}):
            name = "FlashLips (offline)" if la < 0 else f"FlashLips (streaming, lookahead {la})"
            rows[name] = flashlips_report(lips, data_dir, steps, la)
    if not rows:
        raise UserError("nothing to evaluate: give --ae, --editor and/or --refine checkpoints")
    keys = sorted({k for r in rows.values() for k in r})
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" if k in r else "" for k in keys) + " |")
    if out:
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    run_main(main)

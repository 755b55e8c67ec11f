"""Evaluation on SynthTalk test identities (DESIGN.md §5). One command, fixed seeds, the same numbers
every run:

    python -m flashsync.eval                                   # whatever of the demo's out/ exists
    python -m flashsync.eval --ckpt=out/refine/ckpt.pt,out/pose/ckpt.pt,out/pose2/ckpt.pt --syncnet=...

Checkpoints of any kind go in --ckpt; each pose model becomes a FlashLips method (offline and
streaming rows), driving the editor in the list it was trained on. `copy` (output = the source
video) and `oracle` (SynthTalk re-rendered with the true mouth) are always there, so every number
can be read against its worst and best case. Prints markdown tables and writes JSON (--out).

FlashLips stage 1 (the editor driven by a donor's lips vector, 200 pairs):
  ae_psnr        autoencoder reconstruction PSNR of test frames
  lips_r         Pearson r between the reader's opening on the output and the donor frame's
                 true opening (donor: another clip of the same identity)
  outside_db     PSNR outside the lower-face box (output vs source) minus that of the AE
                 reconstruction: 0 means the edit left the rest of the face as the AE does
  outside_change mean absolute pixel change outside the lower-face box vs the source (0-255)
  colour_shift   with a donor of another identity: relative change of the lower-face box's
                 mean colour vs the AE reconstruction (identity must not travel in the vector)

The suite (each of the 20 test clips driven by its own speech, by another identity's, by silence):
  psnr, ssim     own speech: output vs source, whole crop; mouth_psnr: inside face.MOUTH
  recon_r        own speech: r between the reader's opening on the output and the truth
  r_driving      another identity's speech: r with the driving clip's true opening (high is good)
  r_source       the same with the source video's opening: leakage (near 0 is good)
  lipleak        silence: fraction of output frames whose mouth reads open (low is good)
  lse_d, lse_c   the sync expert on (output, driving speech): distance at the best offset (low is
                 good) and confidence = median - min over +-15 frames (high is good)
  lipscore       cosine of the expert's visual embeddings of output and oracle (1 is perfect)
  id_psnr        PSNR outside the lower-face box vs the source (identity and background kept)
  flicker        frame-to-frame change outside the mouth box, relative to the source's (1: as steady)
  occ_psnr       PSNR inside the occluder (hand, microphone) vs the source, on clips that have one
                 (the mean of per-frame PSNRs; occ_pooled: one PSNR over all their frames' occluder pixels)
  and a check of the expert itself: offsets recovered on clips with the audio shifted -10..10
  frames, and how often LSE-C of a real pair beats the same video with another clip's speech.

KeySync (both its checkpoints in --ckpt, or the demo's out/keysync_*): a diffusion model is ~16x
slower per frame than FlashLips (flashsync.bench), so its rows use the test clips with an occluder and as many without,
with FlashLips on the same clips beside it: KeySync with the true occluder masks, without guidance
(ablation); then, on the occluded clips and the cross-sync runs only, the segmenter's masks and no
occlusion handling (ablation), and the segmenter's IoU. The occluder's pixels are the source's, as
sample.py pastes them; a row with the occluder as the decoder drew it shows what the latent
replacement alone keeps.

KeyFace (both its checkpoints, or out/keyface_*) and the audio-event encoder (out/events): see
eval_video.py: sync on speech frames, identity drift over 60 s with and without joint keyframes,
event accuracy per class.
"""
import json
import os
import time

import numpy as np
import torch

from flashsync import FPS, face, metrics, realspeech, synth
from flashsync.autoencoder import psnr
from flashsync.checkpoint import load_checkpoint, load_model
from flashsync.config import configure
from flashsync.dataset import load_clip, read_index
from flashsync.lipsync import LipSync
from flashsync.nn import to_float, to_uint8
from flashsync.speech import PHONEMES
from flashsync.syncnet import MAX_OFFSET, embed_frames, embed_speech, lipscore, lse, offset_distances, shift_audio
from flashsync.util import UserError, atomic_path, run_main


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
    if not ids:
        raise UserError("the editor rows need test identities with two clips each (data.py synth --clips_per_identity=2)")
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


# ----------------------------------------------------------------------------- the suite

def load_test(data_dir):
    """The test clips, sorted by name: dicts of name, frames, audio, gt, meta, occluder (or None)."""
    out = []
    for c in sorted(read_index(data_dir)["clips"], key=lambda c: c["name"]):
        if c["split"] == "test":
            frames, audio, meta, occ = load_clip(data_dir, c["name"])
            out.append(dict(name=c["name"], frames=np.array(frames), audio=np.array(audio), gt=meta.get("gt"),
                            meta=meta, occluder=None if occ is None else np.asarray(occ)))
    if not out:
        raise UserError(f"{data_dir} has no test clips")
    if any(c["gt"] is None for c in out):
        raise UserError(f"{data_dir} is not SynthTalk (no ground truth): the suite needs python data.py synth")
    return out


def driver_of(clips, i):
    """The clip whose speech drives clip i: the next one (cyclically) of another identity."""
    ident = clips[i]["meta"]["identity"]
    for k in range(1, len(clips)):
        j = (i + k) % len(clips)
        if clips[j]["meta"]["identity"] != ident:
            return j
    raise UserError("the test split needs at least two identities")


def oracle(clip, mouth):
    """Ground truth for an edit: the clip's person, head motion and occluder with another mouth track
    (dict of open, width, round, teeth; None: its own) -> uint8 frames as long as the mouth track."""
    m, gt = clip["meta"], clip["gt"]
    n = len(gt["open"])                                   # render the whole clip: the occluder's path depends on it
    k = n if mouth is None else len(mouth["open"])
    full = None if mouth is None else {key: np.concatenate([mouth[key], np.asarray(gt[key])[k:]]) for key in mouth}
    out = synth.make_clip(m["identity"], m["seed"], seconds=n / FPS, res=m["resolution"],
                          occluder=m["occluder"] is not None, nsv=m.get("nsv", 0.3), mouth=full)
    return out["video"][:k]


def silent_mouth(n):
    """The mouth at rest, as speech.py draws pauses, for n frames."""
    return {k: np.full(n, v, np.float32) for k, v in zip(("open", "width", "round", "teeth"),
                                                         np.clip(PHONEMES["sil"].mouth, 0, 1))}


def flashlips(lips, steps=6, lookahead=-1, group=1):
    """A FlashLips method for the suite: (clip, audio, mouth) -> frames, exactly as sample.py computes them
    (streaming, lookahead >= 0: as stream.py does with --pose_frames=group)."""
    def run(clip, audio, mouth, seed):
        frames = torch.from_numpy(clip["frames"])
        lips.set_reference(frames[torch.linspace(0, len(frames) - 1, 4).long()])
        p = lips.poses(torch.as_tensor(audio), steps, seed, lookahead, group=group)[:len(frames)]
        return np.concatenate([lips.edit(frames[i:i + 64], p[i:i + 64]).numpy() for i in range(0, len(frames), 64)])
    return run


METHODS_FIXED = {
    "copy": lambda clip, audio, mouth, seed: clip["frames"],           # the source, untouched: leakage's upper bound
    "oracle": lambda clip, audio, mouth, seed: oracle(clip, mouth),    # the truth: the best any method can do
}


def suite(methods, clips, expert=None, cross_only=False):
    """Every metric of DESIGN.md §5 for each method -> {method: {metric: value}}. cross_only: only the
    runs driven by another identity's speech (the columns r_driving ... occ_psnr), a third of the time."""
    for c in clips[:3]:             # the oracle must re-render the stored clips exactly, or it is no oracle
        if not np.array_equal(oracle(c, None), c["frames"]):
            raise UserError(f"{c['name']}: cannot re-render this SynthTalk clip exactly (made by another version?)")
    rows = {}
    for name, method in methods.items():
        acc = {k: [] for k in ("psnr", "ssim", "mouth_psnr", "id_psnr", "flicker", "occ_psnr", "lse_d", "lse_c",
                               "lipscore")}
        own, own_gt, cross, cross_drv, cross_src, silent = [], [], [], [], [], []
        occ_err = [0.0, 0]                   # squared error and pixel count inside the occluders, all clips
        for i, clip in enumerate(clips):
            frames, gt = clip["frames"], clip["gt"]
            drv = clips[driver_of(clips, i)]
            n = min(len(frames), len(drv["frames"]))
            sub = dict(clip, frames=frames[:n], occluder=None if clip["occluder"] is None else clip["occluder"][:n])
            if not cross_only:              # reconstruction: driven by its own speech
                out = method(clip, clip["audio"], None, i)
                acc["psnr"].append(metrics.psnr(out, frames))
                acc["ssim"].append(metrics.ssim(out, frames))
                acc["mouth_psnr"].append(metrics.region_psnr(out, frames, face.MOUTH))
                own.append(metrics.opening(out))
                own_gt.append(np.asarray(gt["open"]))
            # cross-sync: driven by another identity's speech
            audio = drv["audio"][:n * 640]
            mouth = {k: np.asarray(drv["gt"][k])[:n] for k in ("open", "width", "round", "teeth")}
            out = method(sub, audio, mouth, i)
            cross.append(metrics.opening(out))
            cross_drv.append(mouth["open"])
            cross_src.append(np.asarray(gt["open"])[:n])
            acc["id_psnr"].append(metrics.region_psnr(out, frames[:n], face.LOWER_FACE, inside=False))
            acc["flicker"].append(metrics.flicker(out, frames[:n]))
            if sub["occluder"] is not None and sub["occluder"].any():
                acc["occ_psnr"].append(metrics.psnr(out, frames[:n], sub["occluder"]))
                d = ((np.asarray(out, np.float64) - frames[:n]) ** 2).mean(-1)
                occ_err[0] += float(d[sub["occluder"]].sum())
                occ_err[1] += int(sub["occluder"].sum())
            if expert is not None:
                r = lse(expert, out, audio)
                acc["lse_d"].append(r["lse_d"])
                acc["lse_c"].append(r["lse_c"])
                acc["lipscore"].append(lipscore(expert, out, oracle(sub, mouth)))
            if not cross_only:              # LipLeak: driven by silence
                silent.append(method(clip, np.zeros(len(frames) * 640, np.float32), silent_mouth(len(frames)), i))
        row = {k: float(np.mean(v)) for k, v in acc.items() if v}
        if occ_err[1]:                       # one exact frame makes the per-frame mean inf; this does not
            row["occ_pooled"] = float(10 * np.log10(255 ** 2 / max(occ_err[0] / occ_err[1], 1e-10)))
        row.update(r_driving=metrics.pearson(np.concatenate(cross), np.concatenate(cross_drv)),
                   r_source=metrics.pearson(np.concatenate(cross), np.concatenate(cross_src)))
        if not cross_only:
            row.update(recon_r=metrics.pearson(np.concatenate(own), np.concatenate(own_gt)),
                       lipleak=metrics.lipleak(np.concatenate(silent)))
        rows[name] = row
    return rows


def expert_report(expert, clips, offsets=range(-10, 11)):
    """How well the sync expert works: offsets recovered on shifted test clips, real vs swapped LSE-C."""
    hits, total, wins, pairs = 0, 0, 0, 0
    for i, clip in enumerate(clips):
        frames, audio = clip["frames"], clip["audio"]
        v = embed_frames(expert, frames)
        for k in offsets:                                   # audio made k frames late (k < 0: early)
            shifted = shift_audio(audio, k)
            d = offset_distances(v, embed_speech(expert, shifted, len(frames)))
            hits += abs(int(d.argmin()) - MAX_OFFSET - k) <= 1
            total += 1
        drv = clips[driver_of(clips, i)]
        n = min(len(frames), len(drv["frames"]))
        real = lse(expert, frames[:n], audio[:n * 640])["lse_c"]
        swapped = lse(expert, frames[:n], drv["audio"][:n * 640])["lse_c"]
        wins += real > swapped
        pairs += 1
    return dict(offset_within_1=hits / total, offsets_tested=total, lse_c_real_beats_swapped=wins / pairs,
                pairs=pairs)


# -----------------------------------------------------------------------------
data_dir = "data/synth"
ckpt = ""                # comma-separated checkpoints of any kind; empty: the demo's, those of out/ that exist
syncnet = ""             # the sync expert (empty: out/syncnet/ckpt.pt if it exists)
steps = 6                # Euler steps of the pose sampler
guidance = 3.0           # audio guidance of the pose sampler (1: none; above 1 closures close and vowels open more firmly)
lookahead = 2            # streaming lookahead in frames, a row beside offline (-1: offline only)
pose_frames = 1          # streaming: poses sampled this many frames per window (stream.py --pose_frames)
pairs = 200              # source/donor pairs for the stage-1 editor rows
synthtalk = True         # the SynthTalk suite (false: the stage-1 and real-speech rows only)
speech = ""              # folder of real speech with phoneme times (default ../shared/media/speech when present;
                         # "none" to skip): closure, opening and pause-open, see flashsync/realspeech.py
speech_faces = 2         # test faces each speech file drives
noises = "white,pink,brown,hum,breath"   # noise floors mixed into the speech ("" for none)
noise_db = "-60,-30"     # their levels, dB RMS re the speech's peak (e.g. -60,-50,-40,-30 for more)
ks_steps = 10            # KeySync: Euler steps of each diffusion model
s_ref = 1.0              # KeySync: reference guidance (1: none beyond the conditional model)
s_audio = 4.0            # KeySync, KeyFace: audio guidance
s_nsv = 16.0             # KeyFace: laugh / sigh guidance (keyface.KeyFace.denoiser)
segmenter = ""           # KeySync's occlusion segmenter (empty: out/occluder/ckpt.pt if it exists)
out = "out/eval.json"    # the numbers, as JSON
# -----------------------------------------------------------------------------
DEMO = ("out/ae/ckpt.pt", "out/editor/ckpt.pt", "out/refine/ckpt.pt", "out/pose/ckpt.pt",
        "out/keysync_key/ckpt.pt", "out/keysync_interp/ckpt.pt", "out/events/ckpt.pt", "out/keyface_key/ckpt.pt",
        "out/keyface_interp/ckpt.pt")
SPEECH = "../shared/media/speech"


def table(rows, keys):
    """A markdown table: one row per entry of `rows`, one column per key."""
    cell = lambda v: "" if v is None else ("inf" if v == float("inf") else f"{v:.3f}")
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(r.get(k)) for k in keys) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def main():
    configure(globals())
    torch.manual_seed(0)
    paths = [p for p in ckpt.split(",") if p] or [p for p in DEMO if os.path.exists(p)]
    expert_path = syncnet or ("out/syncnet/ckpt.pt" if os.path.exists("out/syncnet/ckpt.pt") else "")
    if not paths and not expert_path:
        raise UserError("nothing to evaluate: train the demo (python train.py) or give --ckpt=a.pt,b.pt")
    kinds = {p: load_checkpoint(p)["kind"] for p in paths}
    if expert_path:
        kinds[expert_path] = load_checkpoint(expert_path, "syncnet")["kind"]
    t0 = time.time()
    stage1, result = {}, {}
    editors = [p for p in paths if kinds[p] in ("refine", "editor")]
    for p in paths:
        if kinds[p] == "ae":
            stage1[f"autoencoder ({p})"] = ae_report(load_model(p, "ae"), data_dir)
        elif kinds[p] in ("editor", "refine"):
            net = load_model(p)
            ae = net.ae if kinds[p] == "editor" else net.teacher.ae
            stage1[f"editor {'(masked)' if kinds[p] == 'editor' else '(mask-free)'} ({p})"] = \
                editor_report(net, ae, data_dir, pairs)
    if stage1:
        result["stage1"] = stage1
        print("FlashLips stage 1 (editor driven by donor lips vectors):")
        print(table(stage1, sorted({k for r in stage1.values() for k in r})))
    clips = load_test(data_dir)
    expert = load_model(expert_path, "syncnet") if expert_path else None
    methods = {}
    for p in (p for p in paths if kinds[p] == "pose"):
        lips = _pair(p, sorted(editors, key=lambda e: kinds[e] != "refine"))
        tag = "" if len([q for q in paths if kinds[q] == "pose"]) == 1 else f" [{p}]"
        methods[f"FlashLips offline{tag}"] = flashlips(lips, steps, -1)
        if lookahead >= 0:
            ms = (lookahead + 1 + pose_frames) * 40
            name = f"FlashLips streaming ({ms} ms{f', {pose_frames} frames a window' if pose_frames > 1 else ''})"
            methods[name + tag] = flashlips(lips, steps, lookahead, pose_frames)
    lipsync = bool(methods)                      # FlashLips to measure (KeySync and KeyFace have tables of their own)
    methods.update(METHODS_FIXED)
    if synthtalk and lipsync:
        rows = suite(methods, clips, expert)
        result["suite"] = rows
        keys = ["psnr", "ssim", "mouth_psnr", "recon_r", "r_driving", "r_source", "lipleak", "lse_d", "lse_c",
                "lipscore", "id_psnr", "flicker", "occ_psnr"]
        print(f"\nSynthTalk test set: {len(clips)} clips, each driven by its own speech, by another identity's "
              f"and by silence{'' if expert else ' (no sync expert: train one with python train.py config/syncnet_synth.py)'}:")
        print(table(rows, [k for k in keys if any(k in r for r in rows.values())]))
    folder = speech or (SPEECH if os.path.isdir(SPEECH) else "none")
    if folder != "none":
        result["speech"] = speech_tables(methods, clips, folder)
    if synthtalk and expert is not None and (lipsync or syncnet or expert_path in paths):
        result["expert"] = expert_report(expert, clips)
        e = result["expert"]
        print(f"\nsync expert ({expert_path}): offset within 1 frame on {100 * e['offset_within_1']:.1f} % of "
              f"{e['offsets_tested']} shifted clips (-10..10 frames); LSE-C of real pairs beats audio-swapped on "
              f"{100 * e['lse_c_real_beats_swapped']:.1f} % of {e['pairs']} pairs")
    from flashsync.eval_video import _video_pair, events_report, keyface_tables, keysync_tables
    ks = [p for p in paths if kinds[p] == "keysync"]
    if ks and synthtalk:
        seg = segmenter or ("out/occluder/ckpt.pt" if os.path.exists("out/occluder/ckpt.pt") else "")
        flash = next((m for k, m in methods.items() if k.startswith("FlashLips offline")), None)
        result["keysync"] = keysync_tables(ks, seg, flash, clips, expert, ks_steps, s_ref, s_audio)
    for p in (p for p in paths if kinds[p] == "events"):
        result["events"] = events_report(p, clips)
    kf = [p for p in paths if kinds[p] == "keyface"]
    if kf and synthtalk:
        result["keyface"] = keyface_tables(*_video_pair(kf, "keyface"), clips, ks_steps, s_audio, s_nsv)
    print(f"\n({time.time() - t0:.0f} s)")
    if out:
        with atomic_path(out, suffix=".json") as tmp:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=1)
        print(f"wrote {out}")


def speech_tables(methods, clips, folder):
    """The real-speech rows (flashsync/realspeech.py): print them, return them."""
    files = realspeech.load_speech(folder)
    chosen = {k: m for k, m in methods.items() if k != "oracle"}      # no truth mouth exists for real speech
    kinds = [k for k in noises.split(",") if k]
    levels = [float(v) for v in noise_db.split(",") if v] if kinds else []
    r = realspeech.report(chosen, clips, files, speech_faces, kinds, levels)
    rows = {f"{m} · {f}": v for m, per in r["clean"].items() for f, v in per.items()}
    print(f"\nReal speech ({folder}: {len(files)} files, each driving {speech_faces} test faces): closure on p/b/m "
          f"(high is good), opening on open vowels (high), open mouth in pauses (low):")
    print(table(rows, list(realspeech.RATES)))
    for m, conds in r["noisy"].items():
        if conds:
            print(f"\n{m}, the same speech with a noise floor (mean over files; pauses found on the clean audio):")
            print(table(conds, list(realspeech.RATES)))
    return r


def _pair(pose_path, editors):
    """A LipSync of the pose model and the first editor whose lips encoder it was trained on."""
    for e in editors:
        try:
            return LipSync.load(e, pose_path, guidance=guidance)
        except UserError:
            continue
    raise UserError(f"{pose_path}: give the editor it was trained on in --ckpt (e.g. out/refine/ckpt.pt)")


if __name__ == "__main__":
    run_main(main)

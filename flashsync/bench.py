"""FlashLips, KeySync and KeyFace speed on this machine: python -m flashsync.bench [--res=64,128,256] [--batches=1,16]
[--device=cuda]

Random weights (speed does not depend on training) in the architecture of the shipped configs (`archs`):
`shipped` is config/*_synth.py up to 128 px (f = 4) and config/*_gpu.py above (f = 8, wider); `cpu` is
config/*_cpu256.py (f = 8 behind a pixel-unshuffle stem of 4, narrow: real time at 256 px on a CPU),
timed from 192 px. Per row: ms per frame of each stage in
eager mode (encode, pose amortised over 10 s of audio with audio guidance, edit, decode of the edited
and the unedited latent, both of which paste-back needs), then the whole per-frame step (uint8 crop
-> the two uint8 crops) end to end, eager and fast (LipSync's compiled
step; on CUDA also bf16 + CUDA graphs). Every time is the median of `repeats` timed runs
after warm-up; the first call's time (compilation) is reported on its own.

KeySync rows (`keysync_res`): one window of its Dubber (T = 8 keyframes, then the 3 frames between
each pair, `ks_steps` Euler steps with audio guidance: three network passes per step), encode and
decode included, per output frame, beside FlashLips' offline end to end (batch 16, eager) and the
ratio of the two. KeyFace rows (`keyface_res`): its Animator over 4 s of audio (keyframe chunks
denoised together, then the frames between them), per output frame.
"""
import statistics
import time

import torch

from flashsync.autoencoder import AEConfig, Autoencoder
from flashsync.config import configure
from flashsync.editor import Editor, EditorConfig, Refiner
from flashsync.lipsync import LipSync
from flashsync.nn import to_float
from flashsync.pose import PoseConfig, PoseModel
from flashsync.util import UserError, native_bf16, run_main

# -----------------------------------------------------------------------------
res = "64,128,256"        # crop sizes to time
batches = "1,16"          # frames per call: 1 is live streaming, 16 batched offline
modes = "eager,fast"      # fast: LipSync's compiled static-shape step
archs = "shipped,cpu"     # shipped: config/*_synth.py to 128 px, *_gpu.py above; cpu: config/*_cpu256.py (from 192 px)
repeats = 30              # timed runs per number (the median is reported)
device = "auto"           # auto | cpu | cuda
threads = 0               # CPU threads (0: torch's default)
keysync_res = "64,128"    # crop sizes of the KeySync rows ("" for none)
keyface_res = "64,128"    # crop sizes of the KeyFace rows ("" for none)
ks_steps = 10             # KeySync's and KeyFace's Euler steps
# -----------------------------------------------------------------------------


def sync(dev):
    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, dev, repeats):
    """Median seconds of fn() over `repeats` runs after two warm-up calls; also the first call's time."""
    t = time.perf_counter()
    fn()
    sync(dev)
    first = time.perf_counter() - t
    fn()
    times = []
    for _ in range(repeats):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times), first


# (autoencoder settings, editor widths) of each architecture's configs
ARCH = dict(synth=(dict(factor=4, channels=(32, 64), stem=2), (64, 128)),        # config/{ae,editor}_synth.py
            gpu=(dict(factor=8, channels=(64, 128, 256, 256)), (128, 256)),      # config/{ae,editor}_gpu.py
            cpu=(dict(factor=8, channels=(32, 64), stem=4, latent=8), (64, 128)))          # config/{ae,editor}_cpu256.py


def arch_of(name, r):
    """The architecture a row of `archs` times at r px, or None where it has no row."""
    if name == "shipped":
        return "synth" if r <= 128 else "gpu"
    if name == "cpu":
        return "cpu" if r >= 192 else None
    raise UserError(f"--archs: unknown architecture {name!r}; use shipped or cpu")


def small_ae(r):
    """config/ae_synth.py's autoencoder: f = 4, pixel-unshuffle stem 2, channels (32, 64)."""
    return Autoencoder(AEConfig(resolution=r, **ARCH["synth"][0]))


def build(r, dev, fast, batch, arch="synth", bf16=None):
    torch.manual_seed(0)
    ae_cfg, widths = ARCH[arch]
    ae = Autoencoder(AEConfig(resolution=r, **ae_cfg))
    editor = Editor(EditorConfig(resolution=r, channels=widths, latent=ae.cfg.latent), ae)
    pose = PoseModel(PoseConfig(audio_drop=0.3), editor.lips)         # as trained: sampled with audio guidance
    lips = LipSync(Refiner(editor), pose, device=dev, fast=fast, batch=batch, bf16=bf16)
    lips.set_reference(torch.randint(0, 256, (4, r, r, 3), dtype=torch.uint8))
    return lips


@torch.no_grad()
def bench_row(r, batch, dev, mode, repeats, arch="synth"):
    lips = build(r, dev, mode == "fast", batch, arch)
    crops = torch.randint(0, 256, (batch, r, r, 3), dtype=torch.uint8, device=dev)
    poses = torch.randn(batch, 12, device=dev)
    row = dict(res=r, arch=arch, batch=batch, mode=mode)
    e2e, first = timed(lambda: lips.edit(crops, poses, recon=True), dev, repeats)   # what sample.py pastes
    row.update(e2e_ms=1000 * e2e / batch, fps=batch / e2e, first_s=first)
    if mode == "eager":                               # the stages, one by one
        x = to_float(crops)
        z = lips.ae.encode(x)
        zero = torch.zeros_like(z[:, :1])
        row["encode_ms"] = 1000 * timed(lambda: lips.ae.encode(x), dev, repeats)[0] / batch
        row["edit_ms"] = 1000 * timed(lambda: lips.net(z, zero, None, poses, refs=lips.ref_feat), dev, repeats)[0] / batch
        row["decode_ms"] = 1000 * timed(lambda: lips.ae.decode(torch.cat([z, z])), dev, repeats)[0] / batch
        audio = torch.randn(10 * 16000) * 0.1
        row["pose_ms"] = 1000 * timed(lambda: lips.poses(audio), dev, 3)[0] / 250      # offline, per frame
    return row


@torch.no_grad()
def keysync_row(r, dev, repeats=1):
    """ms per frame of KeySync over one keyframe window, and of FlashLips offline at the same size."""
    from flashsync.keysync import Dubber, KeySync, KeySyncConfig
    from flashsync.pose import AudioEncoder
    torch.manual_seed(0)
    ae = small_ae(r)
    audio = AudioEncoder(PoseConfig())
    key, interp = (KeySync(KeySyncConfig(resolution=r, interp=i), ae, audio) for i in (False, True))
    dub = Dubber(key, interp, steps=ks_steps, s_ref=1.0, s_audio=4.0, device=dev)
    dub.set_reference(torch.randint(0, 256, (r, r, 3), dtype=torch.uint8))
    n = dub.hop + 1
    crops = torch.randint(0, 256, (n, r, r, 3), dtype=torch.uint8).numpy()
    wave = 0.1 * torch.randn(n * 640)
    ks = timed(lambda: list(dub.run(iter(crops), None, wave)), dev, repeats)[0] / n
    flash = bench_row(r, 16, dev, "eager", 5)["e2e_ms"] / 1000
    return dict(res=r, keysync_ms=1000 * ks, keysync_fps=1 / ks, flashlips_ms=1000 * flash, ratio=ks / flash)


@torch.no_grad()
def keyface_row(r, dev, seconds=4.0):
    """ms per frame of KeyFace animating one image over `seconds` of audio."""
    from flashsync.events import EventConfig, EventEncoder
    from flashsync.keyface import Animator, KeyFace, KeyFaceConfig
    from flashsync.pose import AudioEncoder
    torch.manual_seed(0)
    ae = small_ae(r)
    audio, events = AudioEncoder(PoseConfig()), EventEncoder(EventConfig())
    key, interp = (KeyFace(KeyFaceConfig(resolution=r, interp=i), ae, audio, events) for i in (False, True))
    anim = Animator(key, interp, steps=ks_steps, s_ref=1.0, s_audio=4.0, device=dev)
    n = int(seconds * 25)
    crop = torch.randint(0, 256, (r, r, 3), dtype=torch.uint8).numpy()
    wave = (0.1 * torch.randn(n * 640)).numpy()
    t = timed(lambda: list(anim.run(crop, wave)), dev, 1)[0] / n
    return dict(res=r, keyface_ms=1000 * t, keyface_fps=1 / t)


def main():
    configure(globals())
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device=cuda but no CUDA GPU is available")
    if threads:
        torch.set_num_threads(threads)
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    precision = "bf16 (native here)" if native_bf16(dev) else "float32"
    print(f"flashsync.bench on {name}, torch {torch.__version__}, median of {repeats} runs, ms per frame; "
          f"the step in {precision}\n")
    cols = ["res", "arch", "batch", "mode", "encode_ms", "pose_ms", "edit_ms", "decode_ms", "e2e_ms", "fps", "first_s"]
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for r in (int(v) for v in res.split(",")):
        for arch in filter(None, (arch_of(a, r) for a in archs.split(","))):
            for b in (int(v) for v in batches.split(",")):
                for mode in modes.split(","):
                    row = bench_row(r, b, dev, mode, repeats, arch)
                    cell = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
                    print("| " + " | ".join(cell(row[c]) if c in row else "" for c in cols) + " |", flush=True)
    sizes = [int(v) for v in keysync_res.split(",") if v]
    if sizes:
        print(f"\nKeySync ({ks_steps} Euler steps, audio guidance 4) vs FlashLips offline (batch 16, eager), ms per "
              f"frame; ratio = how many times faster FlashLips is:")
        rows_table(["res", "keysync_ms", "keysync_fps", "flashlips_ms", "ratio"], (keysync_row(r, dev) for r in sizes))
    sizes = [int(v) for v in keyface_res.split(",") if v]
    if sizes:
        print(f"\nKeyFace ({ks_steps} Euler steps, audio guidance 4) animating one image over 4 s of audio, ms per "
              f"frame:")
        rows_table(["res", "keyface_ms", "keyface_fps"], (keyface_row(r, dev) for r in sizes))


def rows_table(cols, rows):
    """Print a markdown table, one row as each dict of `rows` is computed."""
    print("\n| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols)
              + " |", flush=True)


if __name__ == "__main__":
    run_main(main)

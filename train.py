"""The one training loop for every flashsync model.

    python train.py                                # the whole FlashLips demo: data, 4 stages, out/demo.mp4
    python train.py config/ae_synth.py             # autoencoder
    python train.py config/editor_synth.py         # masked FlashLips editor (needs the autoencoder)
    python train.py config/refine_synth.py         # mask-free self-refinement (needs the editor)
    python train.py config/pose_synth.py           # audio -> lips poses (needs the editor)
    python train.py config/syncnet_synth.py        # the lip-sync expert for the metrics
    python train.py keysync                        # after the demo: KeySync (segmenter, keyframe, interpolation
                                                   # models) and out/keysync_demo.mp4
    python train.py keyface                        # after the demo: KeyFace (event encoder, keyframe, interpolation
                                                   # models) and out/keyface_demo.mp4
    python train.py cpu256                         # FlashLips at 256 px for real time on a CPU (config/*_cpu256.py)
    torchrun --standalone --nproc_per_node=8 train.py config/<name>.py     # several GPUs (DDP)

nanoGPT order: config -> device / DDP -> data -> model -> optimiser -> compile ->
loop (grad clip, EMA, eval on the val split, log, atomic checkpoint). `--resume`
continues exactly where the last checkpoint stopped (model, EMA, optimiser,
step, the data sampler's and torch's random state).
"""
import contextlib
import datetime
import hashlib
import json
import math
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from flashsync.checkpoint import build, load_checkpoint, slim
from flashsync.config import config_of, configure
from flashsync.util import UserError, atomic_path, native_bf16, run_main

# -----------------------------------------------------------------------------
# defaults: override with config/<name>.py or --key=value
model = "ae"                      # ae | editor | refine | pose | syncnet | keysync | keyface | occluder | events
data_dir = "data/synth"           # a dataset made by data.py
out_dir = "out/ae"                # checkpoint, log and sample images go here
init_from = ""                    # checkpoint this model builds on (editor: the autoencoder; refine: the editor)
resume = False                    # continue from out_dir/ckpt.pt
# autoencoder
factor = 4                        # 4 at 64-128 px, 8 from 256 px
ae_stem = 2                       # pixel-unshuffle the image by this first: no conv at full resolution (1: off)
ae_channels = (32, 64)            # per level, from the stem's resolution (log2(factor / ae_stem) + 1 levels)
ae_latent = 4                     # latent channels
ae_crop = 0                       # train on random crops of this size, half holding the mouth (0: whole frames)
# editor
refs = 4                          # K reference frames of the same video
group = 1                         # targets per clip in a batch, sharing its K references (editor, refine; 4 is 1.5x faster but lost r 0.90 -> 0.84 on SynthTalk)
lips_dim = 12                     # the lips-pose vector
lips_noise = 0.2                  # bottleneck noise on the unit-norm lips vector (training only)
editor_channels = (64, 128)       # UNet widths at latent resolution and half of it
# pose (audio -> lips vectors)
pose_dim = 128                    # transformer width
pose_layers = 4                   # flow transformer blocks
seq_len = 50                      # frames per training window (2 s)
audio_augment = True              # train on random recordings of the speech: level, noise floors, rooms, bands
phoneme_weight = 0.3              # auxiliary loss: name SynthTalk's phoneme of each frame from the audio (0: off)
audio_drop = 0.3                  # chance a window trains without audio, for guidance at sampling (0: off)
speech_rate = 1.0                 # > 1: each pose batch spoken 1/x .. x times as fast, voice scaled with it (1: off)
# keysync, keyface (keyframe and interpolation latent diffusion; init_from: the pose model, for its audio encoder)
events_from = "out/events/ckpt.pt"  # keyface: the audio-event encoder (silence / speech / laugh / sigh)
interp = False                    # train the interpolation model (False: the keyframe model)
keyframes = 8                     # T keyframes per window
stride = 4                        # S frames between keyframes
ks_channels = (64, 128)           # backbone widths at latent resolution and half of it
ks_poses = False                  # condition also on the lips poses the pose model samples from the audio
                                  # (backbone.PoseFeatures), beside its audio encoder's features
p_true = 0.0                      # with ks_poses: the fraction of windows trained on the frames' own lips poses
true_noise = 0.3                  # plus this much noise (LatentVideoModel.train_features)
shared_noise = 0.0                # half the windows train on noise this much shared by their frames (diffusion.loss)
temporal_weight = 0.0             # loss weight of the denoising miss's frame-to-frame change: steadier video (diffusion.loss)
p_mean = -0.4                     # training noise: ln(sigma) ~ N(p_mean, p_std^2) (the paper: 1.0, 1.2; see diffusion.py)
p_std = 1.2
other_clip = False                # keyface: the identity image from another clip of the same person (its
                                  # expression is not the window's, so the emotion must come from the condition)
nsv_windows = 0.0                 # keyface: the fraction of training windows drawn around a laugh or a sigh
                                  # (FrameSampler nsv), beside those that hold one anyway
emo_weight = 0.0                  # keyface: > 0, a latent emotion reader trains beside it and the model's denoised
                                  # frames must read as the emotion asked, with this weight (KeyFace.emotion_aux)
seg_stem = 2                      # occluder: pixel-unshuffle the crop by this first (1: a conv at full resolution)
seg_relight = True                # occluder: train on relit, recoloured, mirrored crops (occluder.relight): without,
                                  # shadows on real faces read as hands
mouth_weight = 2.0                # extra loss weight on the mouth box (ae: its pixels; keysync, keyface: its
                                  # latent cells, what the audio decides)
eyes_weight = 0.0                 # keyface: extra loss weight on the eyes' and brows' latent cells (face.EYES)
# optimisation
batch_size = 16                   # per process (DDP: per GPU)
max_steps = 2500                  # optimiser steps
lr = 2e-3                         # peak learning rate (AdamW) after warmup
min_lr = 1e-4                     # cosine decay ends here
warmup = 50                       # steps of linear warmup
weight_decay = 0.0
grad_clip = 1.0                   # max gradient norm (0: off)
ema = 0.999                       # EMA decay of the weights that are evaluated and saved
# eval, logging, checkpoints
eval_every = 500                  # steps between val loss, sample image and checkpoint
eval_batches = 4                  # val batches per evaluation
log_every = 50                    # steps between log lines
seed = 0                          # data order and initialisation
# system
device = "auto"                   # auto | cpu | cuda
dtype = "auto"                    # autocast dtype: auto = bfloat16 on CUDA and on CPUs with native bf16 (the editor
                                  # trains 1.45x faster on AVX512-BF16), else float32 (off)
compile = False                   # torch.compile the model
threads = 0                       # CPU threads (0: torch's default)
# -----------------------------------------------------------------------------


def trainable(net):
    return {k: v for k, v in net.named_parameters() if v.requires_grad}


def grid(net, batch):
    """A uint8 image of eval samples, one row each: source | masked input | output (others: source | output)."""
    from flashsync.nn import to_float, to_uint8
    with torch.no_grad():
        _, stats = net.loss(batch)
    x = to_float(batch["target"])
    cols = [x]
    if hasattr(net, "pix_mask"):                   # the masked editor: show what it was given
        cols.append(x * (1 - net.pix_mask))
    cols.append(stats["y"])
    rows = torch.cat([torch.cat([to_uint8(c[i].float().cpu()) for c in cols], 1) for i in range(min(8, len(x)))], 0)
    return rows.numpy()


ROOT = os.path.dirname(os.path.abspath(__file__))
DEMO_STAGES = ("ae", "editor", "refine", "pose")


def run(script, *args):
    """python script args (a file beside train.py, or -m module), stopping the demo if it fails."""
    import subprocess
    import sys
    cmd = [sys.executable, *(["-m", script[3:]] if script.startswith("-m ") else [os.path.join(ROOT, script)])]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if subprocess.run(cmd + list(args), env=env).returncode:
        raise UserError(f"the demo stopped: python {script} {' '.join(args)} failed; fix it and run "
                        f"the same command again (finished stages are kept)")


def demo():
    """`python train.py` alone: SynthTalk data if missing, the four FlashLips stages with their
    config/<stage>_synth.py (finished stages are kept, interrupted ones resumed), then
    out/demo.mp4 (a held-out face dubbed with another clip's speech, beside its source) and
    its sync numbers. About 32 minutes on the 2 slow AVX2 cores measured in the README (faster CPUs
    and bf16 ones take less)."""
    t0 = time.time()
    if not os.path.exists("data/synth/index.json"):
        print("== SynthTalk data (data/synth)", flush=True)
        run("data.py", "synth", "--out_dir=data/synth")
    train_stages(DEMO_STAGES)
    print(f"== training done in {(time.time() - t0) / 60:.1f} min; dubbing a held-out face", flush=True)
    demo_video()
    print(f"== demo done in {(time.time() - t0) / 60:.1f} min", flush=True)


def train_stages(stages, recipe="synth"):
    """Train config/<stage>_<recipe>.py for each stage in order: finished stages are kept, interrupted ones
    resumed, and once one is (re)trained every later one is too (it builds on it)."""
    retrain = False
    for stage in stages:
        name = f"{stage}_{recipe}.py"
        cfg_path = os.path.join(ROOT, "config", name)
        cfg = {}
        exec(open(cfg_path).read(), {}, cfg)
        ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
        done = load_checkpoint(ckpt_path, cfg["model"])["step"] if os.path.exists(ckpt_path) and not retrain else -1
        if done >= cfg["max_steps"]:
            print(f"== {stage}: {ckpt_path} is trained ({done} steps), kept", flush=True)
            continue
        print(f"== {stage}: python train.py config/{name}{' --resume' if done >= 0 else ''}", flush=True)
        run("train.py", cfg_path, *(["--resume"] if done >= 0 else []))
        retrain = True


def demo_video():
    """out/demo.mp4: test identity 9 (rendered at 256 px) speaking test identity 19's words; how well the
    mouth follows them, and how cleanly the 64 px edit was pasted into the 256 px video."""
    import numpy as np
    from flashsync import metrics, synth
    from flashsync.audio import save_audio
    from flashsync.video import VideoWriter, read_frames
    src = synth.make_clip(9, 0, seconds=6.0, res=256)
    drv = synth.make_clip(19, 1, seconds=6.0, res=64)

    def write(path, frames, audio=None):
        with VideoWriter(path, frames.shape[2], frames.shape[1], audio=audio) as w:
            for frame in frames:
                w.write(frame)

    write("out/demo_source.mp4", src["video"], src["audio"])
    save_audio("out/demo_speech.wav", drv["audio"])
    save_audio("out/demo_silence.wav", np.zeros_like(drv["audio"]))
    run("sample.py", "--video=out/demo_source.mp4", "--audio=out/demo_speech.wav", "--out=out/demo.mp4", "--compare")
    run("sample.py", "--video=out/demo_source.mp4", "--audio=out/demo_silence.wav", "--out=out/demo_silence.mp4")
    out = np.stack([f[:, 256:] for f in read_frames("out/demo.mp4")])
    source = np.stack(list(read_frames("out/demo_source.mp4")))
    n = min(len(out), len(source), len(drv["gt"]["open"]))
    opening = synth.read_mouth(out[:n])["open"]
    r = lambda gt: float(np.corrcoef(opening, np.asarray(gt)[:n])[0, 1])
    print(f"out/demo.mp4: mouth opening (analytic reader) vs the driving clip's truth r = {r(drv['gt']['open']):.3f}, "
          f"vs the source video's r = {r(src['gt']['open']):.3f}", flush=True)
    # paste-back at 256 px, against the codec floor: the source frames through the same writer, unedited
    write("out/demo_floor.mp4", np.concatenate([source, source], 2))
    floor = np.stack([f[:, 256:] for f in read_frames("out/demo_floor.mp4")])[:n]
    boxes = src["gt"]["lower_face_box"][:n], src["gt"]["mouth_box"][:n]
    got, ref = metrics.paste_quality(out[:n], source[:n], *boxes), metrics.paste_quality(floor, source[:n], *boxes)
    silent = np.stack(list(read_frames("out/demo_silence.mp4")))
    print(f"paste-back at 256 px: lower face outside the mouth {got['outside_mouth_db']:.1f} dB (codec floor "
          f"{ref['outside_mouth_db']:.1f} dB), sharpness {got['sharpness']:.2f} of the source's; driven by silence "
          f"the mouth reads open in {100 * metrics.lipleak(silent):.1f} % of frames (LipLeak)", flush=True)
    print("== python -m flashsync.eval --ckpt=out/refine/ckpt.pt,out/pose/ckpt.pt --lookahead=-1 --noises= "
          "(the full table, streaming rows and the speech with noise floors too: python -m flashsync.eval)", flush=True)
    run("-m flashsync.eval", "--ckpt=out/refine/ckpt.pt,out/pose/ckpt.pt", "--lookahead=-1", "--noises=",
        "--out=out/demo_eval.json")


def cpu256():
    """`python train.py cpu256`: FlashLips at 256 px for real time on a CPU (issue 13): SynthTalk at 256 px
    if missing, the four stages with config/<stage>_cpu256.py, then their numbers on the test identities."""
    t0 = time.time()
    if not os.path.exists("data/synth256/index.json"):
        print("== SynthTalk at 256 px (data/synth256)", flush=True)
        run("data.py", "synth", os.path.join(ROOT, "config", "synth_cpu256.py"))
    train_stages(DEMO_STAGES, "cpu256")
    print(f"== training done in {(time.time() - t0) / 60:.1f} min", flush=True)
    ckpts = ",".join(f"out/{s}_cpu256/ckpt.pt" for s in ("ae", "refine", "pose"))
    print(f"== python -m flashsync.eval --data_dir=data/synth256 --ckpt={ckpts} --lookahead=-1 --speech=none", flush=True)
    run("-m flashsync.eval", "--data_dir=data/synth256", f"--ckpt={ckpts}", "--lookahead=-1", "--speech=none",
        "--out=out/eval_cpu256.json")
    print(f"== done in {(time.time() - t0) / 60:.1f} min; live: python stream.py --editor=out/refine_cpu256/ckpt.pt "
          f"--pose=out/pose_cpu256/ckpt.pt --fast ...", flush=True)


def stages_on_demo(name, stages, then):
    """Train a diffusion method's stages on the FlashLips demo's out/ (its data, autoencoder and audio
    encoder) -> the start time."""
    if not os.path.exists("out/pose/ckpt.pt"):
        raise UserError(f"{name} builds on the FlashLips demo (its data, autoencoder and audio encoder): "
                        "run python train.py first")
    t0 = time.time()
    train_stages(stages)
    print(f"== training done in {(time.time() - t0) / 60:.1f} min; {then}", flush=True)
    return t0


KEYSYNC_STAGES = ("occluder", "keysync_key", "keysync_interp")
KEYSYNC_DEMO = dict(identity=49, seed=2)   # a test identity whose hand covers the mouth in 20 of 150 frames


def keysync_demo():
    """`python train.py keysync`, after `python train.py`: the occlusion segmenter and KeySync's keyframe and
    interpolation models on the FlashLips demo's data, autoencoder and audio encoder, then
    out/keysync_demo.mp4: source | FlashLips | KeySync on a held-out face with a hand crossing its mouth."""
    import numpy as np
    from flashsync import synth
    from flashsync.audio import save_audio
    from flashsync.video import VideoWriter, read_frames
    t0 = stages_on_demo("KeySync", KEYSYNC_STAGES, "dubbing a held-out face")
    src = synth.make_clip(KEYSYNC_DEMO["identity"], KEYSYNC_DEMO["seed"], seconds=6.0, res=256, occluder=True)
    drv = synth.make_clip(19, 1, seconds=6.0, res=64)
    with VideoWriter("out/keysync_demo_source.mp4", 256, 256, audio=src["audio"]) as w:
        for frame in src["video"]:
            w.write(frame)
    save_audio("out/demo_speech.wav", drv["audio"])
    common = ["--video=out/keysync_demo_source.mp4", "--audio=out/demo_speech.wav"]
    run("sample.py", *common, "--out=out/keysync_demo_flashlips.mp4")
    run("sample.py", *common, "--out=out/keysync_demo_keysync.mp4", "--method=keysync")
    flash, keys = read_frames("out/keysync_demo_flashlips.mp4"), read_frames("out/keysync_demo_keysync.mp4")
    with VideoWriter("out/keysync_demo.mp4", 3 * 256, 256, audio=drv["audio"]) as w:
        for frame, a, b in zip(src["video"], flash, keys):
            w.write(np.concatenate([frame, a, b], 1))
    print(f"== wrote out/keysync_demo.mp4 (source | FlashLips | KeySync) in {(time.time() - t0) / 60:.1f} min; "
          f"the numbers: python -m flashsync.eval", flush=True)


KEYFACE_STAGES = ("events", "keyface_key", "keyface_interp")
KEYFACE_DEMO = dict(identity=29, speaker=39, emotion="0:neutral,7:happy,14:sad")     # test identities


def keyface_demo():
    """`python train.py keyface`, after `python train.py`: the audio-event encoder and KeyFace's keyframe and
    interpolation models on the FlashLips demo's data, autoencoder and audio encoder, then
    out/keyface_demo.mp4: one held-out face image speaking 20 s of another held-out identity's speech
    with a laugh in it, neutral, then happy from 7 s, then sad from 14 s."""
    from flashsync import speech, synth
    from flashsync.audio import save_audio
    from flashsync.video import write_png
    t0 = stages_on_demo("KeyFace", KEYFACE_STAGES, "animating a held-out face")
    face = synth.make_clip(KEYFACE_DEMO["identity"], 0, seconds=0.4, res=256, motion=False, valence=0.0, arousal=0.0)
    write_png("out/keyface_demo_face.png", face["video"][0])
    for seed in range(100):                          # the first 20 s of held-out speech with a laugh
        drv = synth.make_clip(KEYFACE_DEMO["speaker"], seed, seconds=20.0, res=64, nsv=0.5)
        if (drv["gt"]["label"] == speech.LAUGH).sum() >= 10:
            break
    save_audio("out/keyface_demo_speech.wav", drv["audio"])
    run("sample.py", "--method=keyface", "--image=out/keyface_demo_face.png", "--audio=out/keyface_demo_speech.wav",
        f"--emotion={KEYFACE_DEMO['emotion']}", "--out=out/keyface_demo.mp4")
    print(f"== wrote out/keyface_demo.mp4 in {(time.time() - t0) / 60:.1f} min; the numbers: python -m flashsync.eval",
          flush=True)


def main():
    import sys
    if len(sys.argv) == 1:
        return demo()
    if sys.argv[1:] == ["keysync"]:
        return keysync_demo()
    if sys.argv[1:] == ["keyface"]:
        return keyface_demo()
    if sys.argv[1:] == ["cpu256"]:
        return cpu256()
    args = configure(globals())
    if args:
        raise UserError(f"unexpected arguments {' '.join(args)} (config files end in .py; options are --key=value)")
    cfg = config_of(globals())

    # device and DDP ---------------------------------------------------------
    ddp = int(os.environ.get("RANK", -1)) != -1
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise UserError("--device=cuda but no CUDA GPU is available")
    rank, world = 0, 1
    if ddp:
        # a long timeout: the other processes wait at a barrier while each node's first one encodes the
        # dataset's latents (hours of video take more than the default 10 minutes)
        dist.init_process_group("nccl" if dev == "cuda" else "gloo", timeout=datetime.timedelta(hours=4))
        rank, world = dist.get_rank(), dist.get_world_size()
        if dev == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dev = f"cuda:{os.environ['LOCAL_RANK']}"
    master = rank == 0
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed + rank)
    amp = dtype if dtype != "auto" else ("bfloat16" if native_bf16(dev) else "float32")
    autocast = (torch.autocast(dev.split(":")[0], dtype=getattr(torch, amp)) if amp != "float32"
                else contextlib.nullcontext())

    # data ---------------------------------------------------------------------
    from flashsync.dataset import FrameSampler, read_index
    index = read_index(data_dir)
    cfg["resolution"] = index["resolution"]
    from flashsync.syncnet import CONTEXT, MAX_OFFSET
    span = stride + 1 if interp else (keyframes - 1) * stride + 1        # a KeySync model's window of frames
    video = model in ("keysync", "keyface")                            # latent video diffusion
    length = {"pose": seq_len, "events": seq_len, "syncnet": 2 * (CONTEXT + MAX_OFFSET) + 1}.get(model, span if video else 1)
    per_clip = group if model in ("editor", "refine") else 1
    if batch_size % per_clip:
        raise UserError(f"--batch_size={batch_size} must be a multiple of --group={group} (targets per clip)")
    gen = torch.Generator().manual_seed(seed * 1000 + rank)     # the data position: saved and restored

    # model ----------------------------------------------------------------------
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    state = load_checkpoint(ckpt_path, model) if resume else None
    init = None
    if model not in ("ae", "syncnet", "occluder", "events"):     # these build on nothing
        needs = {"editor": "ae", "keysync": "pose", "keyface": "pose"}.get(model, "editor")
        init = state["init"] if state else (slim(load_checkpoint(init_from, needs)) if init_from else None)
        if model == "keyface" and not state:           # two frozen models: the pose model's and the event encoder
            init = dict(pose=init or {}, events=slim(load_checkpoint(events_from, "events")) if events_from else {})
    net = build(model, state["config"] if state else cfg, init).to(dev)
    # the pose model's targets come from a frozen lips encoder: run it once over every clip, not every step;
    # the editor's references and targets and KeySync's windows come from the frozen autoencoder: every
    # frame's latent, once (the editor step 2x faster: it encoded 80 frames a step for 16 targets)
    latent = video or model in ("editor", "refine")
    features = (lambda frames: net.encode(frames.to(dev)).cpu()) if latent else \
        {"pose": lambda frames: net.poses(frames.to(dev)[None])[0].cpu()}.get(model)
    gap = length if video else 2                       # the reference / identity frame lies outside the window
    cache = ""
    if latent:                                         # the latents of a dataset under one autoencoder, kept on disk
        digest = hashlib.sha1(b"".join(v.cpu().numpy().tobytes() for v in net.ae.state_dict().values()))
        cache = os.path.join(data_dir, f"latents_{digest.hexdigest()[:12]}_{{}}.pt")
    occluded = 0.5 if model == "occluder" else 0.0     # the segmenter sees a hand or microphone in half its frames
    # DDP with a cache: each node's first process encodes the dataset once, the others wait, then read its file
    first = int(os.environ.get("LOCAL_RANK", 0)) == 0
    if ddp and cache and not first:
        dist.barrier()
    train_data, val_data = [FrameSampler(data_dir, split, refs=refs, length=length, group=per_clip, features=features,
                                         gap=gap, cache=cache.format(split), occluded=occluded,
                                         other_clip=other_clip, pixels=video and p_true > 0,
                                         nsv=nsv_windows if split == "train" else 0.0)
                            for split in ("train", "val")]
    if ddp and cache and first:
        dist.barrier()
    ema_net = {k: v.detach().clone() for k, v in net.state_dict().items()}
    params = trainable(net)
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    step = 0
    if state:
        net.load_state_dict(state["model"])
        ema_net = {k: v.to(dev) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        gen.set_state(state["data"])
        if "rng" in state:                             # the models' own noise (diffusion levels, dropout) too
            torch.set_rng_state(state["rng"])
        if master:
            print(f"resumed {ckpt_path} at step {step}")
    n_params = sum(p.numel() for p in params.values())
    if master:
        print(f"{model}: {n_params / 1e6:.2f}M trainable parameters, {len(train_data.clips)} train clips, device {dev}")
    train_net = torch.compile(net) if compile else net
    if ddp:
        train_net = DDP(train_net, device_ids=[int(os.environ["LOCAL_RANK"])] if dev.startswith("cuda") else None)

    def lr_at(s):
        if s < warmup:
            return lr * (s + 1) / warmup
        t = min(1.0, (s - warmup) / max(1, max_steps - warmup))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))

    def to_dev(batch):
        return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}

    def evaluate():
        """Mean val loss of the EMA weights on fixed batches, and a PNG grid."""
        live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(ema_net)
        net.eval()
        g = torch.Generator().manual_seed(1234)
        # batches are made outside autocast, as in training: on a CPU, bf16 autocast refuses to
        # torch.stack the float16 latent cache
        batches = [to_dev(val_data.batch(batch_size, g)) for _ in range(eval_batches)]
        with torch.no_grad(), autocast:
            losses = [float(net.loss(b)[0]) for b in batches]
            image = grid(net, batches[0]) if model in ("ae", "editor", "refine") else None
        net.load_state_dict(live)
        net.train()
        return sum(losses) / len(losses), image

    def save():
        ckpt = dict(format="flashsync", version=1, kind=model, config=state["config"] if state else cfg,
                    init=init, model=net.state_dict(), ema=ema_net, optimizer=opt.state_dict(), step=step,
                    data=gen.get_state(), rng=torch.get_rng_state())
        with atomic_path(ckpt_path, suffix=".pt") as tmp:
            torch.save(ckpt, tmp)

    # loop -----------------------------------------------------------------------
    from flashsync.video import write_png
    os.makedirs(out_dir, exist_ok=True)
    log = open(os.path.join(out_dir, "log.jsonl"), "a") if master else None
    net.train()
    t0, frames_seen = time.time(), 0
    while step < max_steps:
        for param_group in opt.param_groups:
            param_group["lr"] = lr_at(step)
        batch = to_dev(train_data.batch(batch_size, gen))
        with autocast:
            loss, stats = train_net(batch)          # every model's forward(batch) is its training loss
        if not torch.isfinite(loss):
            raise UserError(f"loss became {float(loss.detach())} at step {step}; stopped. The last good checkpoint "
                            f"({ckpt_path}) is intact: lower --lr or resume from it")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params.values(), grad_clip)
        opt.step()
        with torch.no_grad():
            decay = min(ema, (1 + step) / (10 + step))    # short EMA memory early on, `ema` later
            for k, v in net.state_dict().items():
                if k in params:
                    ema_net[k].lerp_(v, 1 - decay)
                else:
                    ema_net[k].copy_(v)
        step += 1
        frames_seen += batch_size * length * world
        if master and (step % log_every == 0 or step == max_steps):
            dt = (time.time() - t0) / log_every if step % log_every == 0 else time.time() - t0
            rec = dict(step=step, loss=float(loss.detach()), lr=lr_at(step), ms=1000 * dt,
                       fps=frames_seen / (time.time() - t0), **{k: float(v) for k, v in stats.items() if v.ndim == 0})
            print(f"step {step}: loss {rec['loss']:.4f}, {rec['ms']:.0f} ms/step, {rec['fps']:.0f} frames/s")
            log.write(json.dumps(rec) + "\n")
            log.flush()
            t0, frames_seen = time.time(), 0
        if master and (step % eval_every == 0 or step == max_steps):
            val, image = evaluate()
            print(f"step {step}: val loss {val:.4f}")
            log.write(json.dumps(dict(step=step, val_loss=val)) + "\n")
            if image is not None:
                write_png(os.path.join(out_dir, f"samples_{step:06d}.png"), image)
            save()
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)

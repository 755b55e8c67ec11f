import json
import os

import numpy as np
import pytest
import torch

from conftest import TINY, run_script
from flashsync.autoencoder import AEConfig, Autoencoder
from flashsync.checkpoint import load_checkpoint, load_model
from flashsync.dataset import FrameSampler
from flashsync.editor import Editor, EditorConfig, Refiner

def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r}


def test_autoencoder_shapes():
    for res, f, ch, stem in ((64, 4, (8, 8, 8), 1), (256, 8, (8, 8, 8, 8), 1), (64, 4, (8, 8), 2),
                             (192, 8, (8, 8), 4), (256, 8, (8, 8, 8), 2)):
        ae = Autoencoder(AEConfig(resolution=res, factor=f, channels=ch, stem=stem))
        z = ae.encode(torch.zeros(2, 3, res, res))
        assert z.shape == (2, 4, res // f, res // f)
        assert ae.decode(z).shape == (2, 3, res, res)
        # with a stem, no convolution sees the full-resolution image
        widest = max(m.in_channels for m in ae.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        first = next(m for m in ae.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == 3 * stem * stem and widest >= first.in_channels



def test_autoencoder_trains_on_crops_on_the_latent_grid_and_evaluates_whole_frames():
    """ae_crop: training sees random crop x crop windows aligned to the latent grid, half of them holding the
    whole mouth box (with its mask), each the exact pixels of its frame; eval sees the whole frame."""
    from flashsync import face
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(resolution=256, factor=8, channels=(8, 8), stem=4, crop=128, mouth_weight=2.0))
    x = torch.rand(200, 3, 256, 256)
    win, box = ae.crops(x)
    assert win.shape == (200, 3, 128, 128) and box.shape == (200, 1, 128, 128)
    x0, y0, x1, y1 = face.region(face.MOUTH, 256)
    whole = (box.flatten(1).sum(1) == (x1 - x0) * (y1 - y0)).float().mean()
    assert 0.3 < whole < 0.7
    for i in range(20):                            # each window is its own frame's pixels at a grid offset
        hits = [(t, l) for t in range(0, 129, 8) for l in range(0, 129, 8)
                if torch.equal(x[i, :, t:t + 128, l:l + 128], win[i])]
        assert len(hits) == 1
    frames = {"target": torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8)}
    _, stats = ae.loss(frames)
    assert stats["y"].shape == (2, 3, 128, 128)
    ae.eval()
    _, stats = ae.loss(frames)
    assert stats["y"].shape == (2, 3, 256, 256)

def test_editor_cached_latents_give_the_same_loss(tiny_data):
    """train.py gives the editor every frame's latent once (target_features, refs_features) instead of
    encoding 80 frames a step: the loss must be the one the pixels give."""
    torch.manual_seed(0)
    ed = Editor(EditorConfig(resolution=32, channels=(16, 16), lips_noise=0.0), Autoencoder(AEConfig(resolution=32, channels=(8, 16), stem=2)))
    with torch.no_grad():
        ed.ae.decoder[-2].weight.normal_()          # a decoder that is not zero, so pixel losses count
    plain = FrameSampler(tiny_data, "train", group=2).batch(4, torch.Generator().manual_seed(3))
    cached = FrameSampler(tiny_data, "train", group=2, features=ed.encode).batch(4, torch.Generator().manual_seed(3))
    assert cached["target_features"].shape == (4, 4, 8, 8) and cached["refs_features"].shape == (2, 4, 4, 8, 8)
    assert torch.equal(plain["target"], cached["target"])
    with torch.no_grad():
        a, b = ed.loss(plain)[0], ed.loss(cached)[0]
        assert torch.allclose(a, b, atol=1e-5), (a, b)
        torch.manual_seed(1)
        a = Refiner(ed).loss(plain)[0]
        torch.manual_seed(1)
        b = Refiner(ed).loss(cached)[0]
        assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_window_pixels_come_beside_their_latents(tiny_data):
    """KeySync's p_true reads the lips poses of a window's own frames: with pixels=True the cached windows
    also carry those frames (video), the very frames whose latents video_features holds."""
    ae = Autoencoder(AEConfig(resolution=32, channels=(8, 16), stem=2))
    kw = dict(length=5, gap=5, features=lambda f: ae.encode(f.movedim(-1, 1).float() / 127.5 - 1))
    without = FrameSampler(tiny_data, "train", **kw).batch(2, torch.Generator().manual_seed(0))
    both = FrameSampler(tiny_data, "train", pixels=True, **kw).batch(2, torch.Generator().manual_seed(0))
    assert "video" not in without and both["video"].shape == (2, 5, 32, 32, 3)
    assert torch.equal(both["video_features"], without["video_features"])
    with torch.no_grad():
        again = ae.encode(both["video"].flatten(0, 1).movedim(-1, 1).float() / 127.5 - 1)
    assert torch.allclose(again.unflatten(0, (2, 5)), both["video_features"], atol=1e-6)


def test_other_clip_refs_show_the_same_person_in_another_clip(tiny_data):
    """KeyFace's identity image from the person's other clip: every reference is a frame of a sibling clip
    (same identity, another name), never of the window's own clip."""
    from flashsync.dataset import load_clip
    data = FrameSampler(tiny_data, "train", length=5, gap=5, other_clip=True)
    batch = data.batch(6, torch.Generator().manual_seed(0))
    for k, c in enumerate(batch["clip"].tolist()):
        name = data.clips[c]["name"]
        frames = {n: np.asarray(load_clip(tiny_data, n)[0]) for n in (q["name"] for q in data.clips)
                  if load_clip(tiny_data, n)[2]["identity"] == load_clip(tiny_data, name)[2]["identity"]}
        assert len(frames) == 2
        other = next(f for n, f in frames.items() if n != name)
        for r in batch["refs"][k].numpy():
            assert any(np.array_equal(r, f) for f in other)
            assert not any(np.array_equal(r, f) for f in frames[name])


def test_editor_residual_and_one_batch_overfit(tiny_data):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(resolution=32, channels=(8, 8, 16)))
    ed = Editor(EditorConfig(resolution=32, channels=(16, 16)), ae)
    batch = FrameSampler(tiny_data, "train").batch(4, torch.Generator().manual_seed(0))
    assert batch["refs"].shape == (4, 4, 32, 32, 3)
    # residual formulation: the fresh UNet outputs zero, so the masked latent comes through unchanged
    z_in, mask, z_refs, _ = ed.encode_inputs(batch["target"], batch["refs"])
    p = ed.lips(torch.zeros(4, 3, 32, 32))
    assert p.shape == (4, 12)
    assert torch.equal(ed.net(z_in, mask, z_refs, p), z_in)
    assert mask.shape == (4, 1, 8, 8) and mask.sum() > 0
    # it can overfit one batch (bottleneck noise off, so the target is fixed)
    ed.lips.noise = 0.0
    opt = torch.optim.Adam([q for q in ed.parameters() if q.requires_grad], lr=3e-3)
    first = float(ed.loss(batch)[0].detach())
    for _ in range(150):
        loss, _ = ed.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(ed.loss(batch)[0].detach()) < 0.5 * first
    # the frozen autoencoder did not move, and refinement starts from the editor's weights
    assert all(not q.requires_grad for q in ed.ae.parameters())
    rf = Refiner(ed)
    loss, stats = rf.loss(dict(batch))
    assert torch.isfinite(loss) and stats["y"].shape == (4, 3, 32, 32)


def test_train_stages_checkpoint_round_trip(tiny_data, tiny_ckpts, tmp_path):
    path, stdout = tiny_ckpts["ae"]
    assert "frames/s" in stdout and os.path.exists(os.path.join(os.path.dirname(path), "samples_000006.png"))
    ckpt = load_checkpoint(path, "ae")
    assert ckpt["step"] == 6 and ckpt["config"]["resolution"] == 32
    ae = load_model(path, "ae")
    for k, v in ae.state_dict().items():
        assert torch.equal(v, ckpt["ema"][k])
    ed = load_model(tiny_ckpts["editor"][0], "editor")
    assert torch.equal(ed.ae.state_dict()["decoder.0.weight"], ae.state_dict()["decoder.0.weight"])
    assert isinstance(load_model(tiny_ckpts["refine"][0], "refine"), Refiner)
    pose = load_model(tiny_ckpts["pose"][0], "pose")
    assert pose.ready == 1 and (pose.flow.std != 1).all()       # pose statistics live in the checkpoint
    # the wrong kind of checkpoint is a clear error
    r = run_script("train.py", "--model=refine", f"--data_dir={tiny_data}", f"--out_dir={tmp_path / 'x'}",
                   f"--init_from={path}", *TINY)
    assert r.returncode == 2 and "holds a 'ae' model, but a 'editor' model is needed" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("model", ["ae", "keysync"])
def test_resume_continues_the_same_curve(tiny_data, tiny_ckpts, tmp_path, model):
    """Exactly the same losses after a kill and --resume: data position, optimiser and, for KeySync's
    random noise levels and condition dropout, torch's random state travel with the checkpoint."""
    import subprocess
    import sys
    import time
    from conftest import KEYSYNC_TINY, ROOT
    extra = [] if model == "ae" else [f"--init_from={tiny_ckpts['pose'][0]}", *KEYSYNC_TINY]
    common = [f"--model={model}", f"--data_dir={tiny_data}", "--max_steps=40", "--eval_every=4", *TINY, *extra]
    r = run_script("train.py", *common, f"--out_dir={tmp_path / 'straight'}")
    assert r.returncode == 0, r.stderr
    # kill a run as soon as it has written a checkpoint, then resume it
    split = tmp_path / "split"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *common, f"--out_dir={split}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    while not (split / "ckpt.pt").exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    start = load_checkpoint(str(split / "ckpt.pt"), model)["step"]
    assert start < 40
    r = run_script("train.py", *common, f"--out_dir={split}", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resumed {split / 'ckpt.pt'} at step {start}" in r.stdout
    a = losses(tmp_path / "straight" / "log.jsonl")
    b = {}
    for line in open(split / "log.jsonl"):     # the resumed run's lines come last and win
        rec = json.loads(line)
        if "loss" in rec:
            b[rec["step"]] = rec["loss"]
    for s in range(start + 1, 41):
        assert abs(a[s] - b[s]) < 1e-6 * max(1, abs(a[s])), (s, a[s], b[s])


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "nan"
    common = ["--model=ae", f"--data_dir={tiny_data}", f"--out_dir={out}", "--eval_every=4", *TINY]
    r = run_script("train.py", *common, "--max_steps=4")
    assert r.returncode == 0, r.stderr
    before = load_checkpoint(str(out / "ckpt.pt"), "ae")
    # resume with an absurd learning rate: the weights explode and the loss stops being finite
    r = run_script("train.py", *common, "--max_steps=50", "--resume", "--lr=1e30", "--grad_clip=0")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss became" in lines[0] and "last good checkpoint" in lines[0]
    after = load_checkpoint(str(out / "ckpt.pt"), "ae")
    assert after["step"] == 4
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())


def test_ddp_two_processes_train_on_one_latent_cache(tiny_data, tiny_ckpts, tmp_path):
    """torchrun, 2 CPU processes (gloo): the editor trains, rank 0 writes the checkpoint, and the frozen
    autoencoder's cache of the dataset's latents is made once and read by both (the barrier in train.py)."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("latents_*"))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(ROOT, "train.py"), "--model=editor", f"--data_dir={data}",
                        f"--init_from={tiny_ckpts['ae'][0]}", f"--out_dir={tmp_path / 'ed'}", "--max_steps=2",
                        "--eval_every=2", *TINY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(str(tmp_path / "ed" / "ckpt.pt"), "editor")["step"] == 2
    assert len(list(data.glob("latents_*_train.pt"))) == 1 and len(list(data.glob("latents_*_val.pt"))) == 1


def test_editor_evaluates_its_cached_latents_under_bf16_autocast(tiny_data, tiny_ckpts, tmp_path):
    """On CPUs with native bf16 train.py autocasts to bf16; the val batches of the float16 latent cache
    must be stacked outside autocast (inside, torch.stack of float16 raised and the demo stopped)."""
    r = run_script("train.py", "--model=editor", f"--data_dir={tiny_data}", f"--init_from={tiny_ckpts['ae'][0]}",
                   f"--out_dir={tmp_path / 'ed'}", "--max_steps=2", "--eval_every=2", "--dtype=bfloat16", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(str(tmp_path / "ed" / "ckpt.pt"), "editor")["step"] == 2

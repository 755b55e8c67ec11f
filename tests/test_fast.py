import torch

from conftest import run_script
from flashsync.audio import log_mel
from flashsync.lipsync import LipSync


def test_fast_path_equals_eager(tiny_ckpts):
    """The compiled, static-shape step (batches padded to 4) gives the eager output within 1 grey level (in
    float32: bf16, where it is native, rounds differently in each; see the next test)."""
    eager = LipSync.load(tiny_ckpts["refine"][0], tiny_ckpts["pose"][0], bf16=False)
    fast = LipSync.load(tiny_ckpts["refine"][0], tiny_ckpts["pose"][0], fast=True, batch=4, bf16=False)
    g = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8, generator=g)    # 7: the last chunk is padded
    poses = torch.randn(7, 12, generator=g) * 2
    for lips in (eager, fast):
        lips.set_reference(crops[:4])
    a, b = eager.edit(crops, poses), fast.edit(crops, poses)
    assert a.shape == b.shape == (7, 32, 32, 3)
    d = (a.int() - b.int()).abs()
    assert d.max() <= 1 and d.float().mean() < 0.01
    assert not torch.equal(a, crops)                          # it did edit
    # the stream's compiled pose sampler: the same poses as eager, window by window and through poses()
    mel = torch.randn(4 * 40, 80, generator=g)
    pw, pb = (lips.pose_windows(mel, [30, 31, 32], 3, 0, 2, 24) for lips in (eager, fast))
    assert pw.shape == (3, 12) and torch.allclose(pw, pb, atol=1e-4), (pw - pb).abs().max()
    audio = torch.randn(640 * 11, generator=g) * 0.1
    pa, pb = (lips.poses(audio, 3, lookahead=2, batch=4) for lips in (eager, fast))   # 11: the last batch padded
    assert pa.shape == pb.shape == (11, 12) and torch.allclose(pa, pb, atol=1e-4), (pa - pb).abs().max()
    # frames sampled 3 to a window (stream.py --pose_frames=3): one window with 2 more frames of past and
    # future; its last frame's pose is that of a window of its own with 2 more frames of context
    grouped = fast.pose_windows(mel, [30], 3, 0, 2, 24, group=3)
    assert grouped.shape == (3, 12)
    assert torch.allclose(grouped[2], eager.pose_windows(mel, [32], 3, 0, 2, 26)[0], atol=1e-4)
    pc = fast.poses(audio, 3, lookahead=2, batch=4, group=3)   # 4 groups of 3 for 11 frames
    assert pc.shape == (11, 12) and torch.allclose(pc[3:6], eager.pose_windows(log_mel(audio), [3], 3, 0, 2, 24,
                                                                               group=3), atol=1e-4)


def test_bf16_step_stays_close_to_float32(tiny_ckpts):
    """LipSync runs its step in bf16 where that is native (CUDA, AVX512-BF16 CPUs): the output may move a few
    grey levels from float32's, no more (bf16 keeps 8 bits of mantissa; the uint8 output has 8 bits)."""
    g = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=g)
    poses = torch.randn(8, 12, generator=g) * 2
    out = []
    for bf16 in (False, True):
        lips = LipSync.load(tiny_ckpts["refine"][0], tiny_ckpts["pose"][0], bf16=bf16)
        lips.set_reference(crops[:4])
        out.append(lips.edit(crops, poses).int())
    d = (out[0] - out[1]).abs()
    assert 0 < d.float().mean() < 1.0 and d.max() <= 12, (d.float().mean(), d.max())


def test_bench_prints_a_table():
    r = run_script("flashsync/bench.py", "--res=32", "--batches=1,2", "--modes=eager", "--repeats=2",
                   "--keysync_res=32", "--keyface_res=32", "--ks_steps=2")
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith("| 32 |")]
    assert len(rows) == 4 and all(float(l.split("|")[-3]) > 0 for l in rows[:2])     # FPS column
    ks = [float(v) for v in rows[2].strip(" |").split("|")]                          # res, ms, fps, flash ms, ratio
    assert ks[1] > 0 and ks[4] > 1                 # even at 2 Euler steps the diffusion model is the slower one
    kf = [float(v) for v in rows[3].strip(" |").split("|")]                          # res, ms, fps
    assert kf[1] > 0 and abs(kf[1] * kf[2] / 1000 - 1) < 0.01     # ms x fps = 1000, up to the table's rounding


def test_cpu256_architecture_shapes_and_fast_path():
    """config/*_cpu256.py's architecture (issue 13): f = 8 latents behind a stem of 4 at 192 and 256 px, the
    lower-resolution levels no wider than the configs say, and its compiled step equal to eager within
    1 grey level at 192 px."""
    from flashsync.bench import ARCH, build
    g = torch.Generator().manual_seed(0)
    for r in (192, 256):
        lips = build(r, "cpu", False, 1, "cpu")
        assert lips.ae.cfg.factor == 8 and lips.ae.cfg.stem == 4
        crops = torch.randint(0, 256, (2, r, r, 3), dtype=torch.uint8, generator=g)
        lips.set_reference(torch.cat([crops, crops]))
        with torch.no_grad():
            z = lips.ae.encode(crops.movedim(-1, 1).float() / 127.5 - 1)
        assert z.shape == (2, ARCH["cpu"][0]["latent"], r // 8, r // 8)
        # no convolution sees the full-resolution image: the first one takes the 4x4 space-to-depth
        first = next(m for m in lips.ae.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == 48 and first.out_channels == ARCH["cpu"][0]["channels"][0]
        out, rec = lips.edit(crops, torch.randn(2, 12, generator=g), recon=True)
        assert out.shape == rec.shape == (2, r, r, 3) and out.dtype == torch.uint8
    eager, fast = build(192, "cpu", False, 1, "cpu", bf16=False), build(192, "cpu", True, 1, "cpu", bf16=False)
    crops = torch.randint(0, 256, (3, 192, 192, 3), dtype=torch.uint8, generator=g)
    poses = torch.randn(3, 12, generator=g)
    for lips in (eager, fast):
        lips.set_reference(torch.cat([crops, crops[:1]]))
    a, b = eager.edit(crops, poses), fast.edit(crops, poses)
    d = (a.int() - b.int()).abs()
    assert d.max() <= 1 and d.float().mean() < 0.01

import torch

from conftest import run_script
from flashsync.lipsync import LipSync


def test_fast_path_equals_eager(tiny_ckpts):
    """The compiled, static-shape step (batches padded to 4) gives the eager output within 1 grey level."""
    eager = LipSync.load(tiny_ckpts["refine"][0], tiny_ckpts["pose"][0])
    fast = LipSync.load(tiny_ckpts["refine"][0], tiny_ckpts["pose"][0], fast=True, batch=4)
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


def test_bench_prints_a_table():
    r = run_script("flashsync/bench.py", "--res=32", "--batches=1,2", "--modes=eager", "--repeats=2",
                   "--keysync_res=32", "--keyface_res=32", "--ks_steps=2")
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith("| 32 |")]
    assert len(rows) == 4 and all(float(l.split("|")[-3]) > 0 for l in rows[:2])     # FPS column
    ks = [float(v) for v in rows[2].strip(" |").split("|")]                          # res, ms, fps, flash ms, ratio
    assert ks[1] > 0 and ks[4] > 1                 # even at 2 Euler steps the diffusion model is the slower one
    kf = [float(v) for v in rows[3].strip(" |").split("|")]                          # res, ms, fps
    assert kf[1] > 0 and abs(kf[1] * kf[2] - 1000) < 1

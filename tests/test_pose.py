import math

import torch

from flashsync.pose import PoseConfig, PoseFlow, euler, lookahead_mask


def test_euler_against_exact_solutions():
    x0 = torch.linspace(-3, 3, 180).reshape(3, 5, 12)
    # constant velocity: exact in any number of steps
    c = torch.randn(12)
    assert torch.allclose(euler(lambda x, t: c.expand_as(x), x0, 1), x0 + c, atol=1e-6)
    # dx/dt = -x: x(1) = x0 / e, Euler's error shrinks like 1/steps
    errors = [(euler(lambda x, t: -x, x0, n) - x0 / math.e).abs().max().item() for n in (4, 16, 256)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 3 * 1e-3     # |x0| <= 3
    # time-dependent: dx/dt = 2t -> x(1) = x0 + 1 (Euler on a linear-in-t field: error 1/steps)
    assert (euler(lambda x, t: 2 * t * torch.ones_like(x), x0, 100) - (x0 + 1)).abs().max() < 0.011


def test_lookahead_mask():
    m = lookahead_mask(5, 1, extra=2)
    assert m.shape == (7, 7) and m[:, :2].all() and m[:2].all()
    assert m[2, 3] and not m[2, 4]          # frame 0 sees frame 1, not frame 2
    assert lookahead_mask(5, -1).all()


def test_future_audio_beyond_the_lookahead_does_not_matter():
    torch.manual_seed(0)
    net = PoseFlow(PoseConfig(dim=32, heads=2, audio_layers=1, flow_layers=1)).eval()
    mel, x, refs, t = torch.randn(1, 80, 80), torch.randn(1, 20, 12), torch.randn(1, 4, 12), torch.full((1,), 0.3)
    later = mel.clone()
    later[:, 60:] = torch.randn(1, 20, 80)              # change audio from frame 15 on
    a = net.velocity(x, t, mel, refs, lookahead=2)
    b = net.velocity(x, t, later, refs, lookahead=2)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-5)   # frames <= 15 - 2 - conv reach are untouched
    assert not torch.allclose(a[:, 16:], b[:, 16:])


def test_pose_model_overfits_one_batch():
    torch.manual_seed(0)
    net = PoseFlow(PoseConfig(dim=64, heads=4, audio_layers=1, flow_layers=2))
    poses, mel, refs = torch.randn(4, 25, 12), torch.randn(4, 100, 80), torch.randn(4, 4, 12)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for step in range(300):
        g.manual_seed(step % 4)                          # a fixed set of noise draws: a fixed target
        loss = net.loss(poses, mel, refs, generator=g)[0]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    out = net.sample(mel, refs, 25, steps=6)
    assert out.shape == (4, 25, 12) and torch.isfinite(out).all()

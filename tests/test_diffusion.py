"""The shared diffusion core: preconditioning, the Euler sampler, guidance, replacement."""
import math

import torch

from flashsync import diffusion
from flashsync.diffusion import EDMConfig


def gaussian_denoiser(mu, s):
    """The exact denoiser E[x0 | x] for data x0 ~ N(mu, s^2) per dimension."""
    return lambda x, sigma: mu + (s ** 2 / (s ** 2 + sigma[:, None] ** 2)) * (x - mu)


def test_euler_with_an_exact_denoiser_recovers_a_known_gaussian():
    cfg = EDMConfig()
    mu, s = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.0, 0.7])
    noise = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0))
    ratio = {}
    for steps in (1, 10, 200):
        x = diffusion.euler(gaussian_denoiser(mu, s), noise, cfg, steps=steps)
        assert torch.allclose(x.mean(0), mu, atol=0.05), (steps, x.mean(0))
        ratio[steps] = x.std(0) / s
    # a first-order solver converges to the data distribution as the steps grow ...
    assert ((ratio[200] - 1).abs() < 0.03).all(), ratio[200]
    # ... and at the default 10 steps shrinks the spread by about a quarter (measured 0.71-0.75: the
    # large steps around σ ~ s undershoot); one step does far worse
    assert ((ratio[10] > 0.65) & (ratio[10] < 0.8)).all(), ratio[10]
    assert (ratio[1] < 0.2).all(), ratio[1]


def test_euler_from_a_guess_keeps_its_structure():
    """SDEdit: started from init + σ_start · noise, the result stays near the guess; from σ_max it does not."""
    cfg = EDMConfig()
    mu, s = torch.zeros(3), torch.ones(3)
    g = torch.Generator().manual_seed(2)
    guess, noise = torch.randn(5000, 3, generator=g), torch.randn(5000, 3, generator=g)
    den = gaussian_denoiser(mu, s)
    assert torch.equal(diffusion.euler(den, noise, cfg, 10, init=guess, start=10), guess)    # no step left
    near = (diffusion.euler(den, noise, cfg, 10, init=guess, start=7) - guess).abs().mean()
    far = (diffusion.euler(den, noise, cfg, 10, init=guess, start=0) - guess).abs().mean()
    assert near < 0.15 < 0.8 < far, (near, far)
    # still a sample of the data: the spread is kept, not collapsed onto the mean
    x = diffusion.euler(den, noise, cfg, 10, init=guess, start=7)
    assert ((x.std(0) - 1).abs() < 0.1).all(), x.std(0)


def test_preconditioning_at_the_sigma_limits():
    d = 0.5
    c_skip, c_out, c_in, c_noise = diffusion.precondition(torch.tensor([1e-4, 1e4]), d)
    assert abs(c_skip[0] - 1) < 1e-6 and abs(c_out[0]) < 1e-3          # no noise: D(x) = x
    assert abs(c_skip[1]) < 1e-6 and abs(c_out[1] + d) < 1e-6          # pure noise: D = -σd F, the data scale
    assert abs(c_in[1] * 1e4 - 1) < 1e-6                                 # the scaled input has unit variance
    assert torch.allclose(c_noise, torch.log(torch.tensor([1e-4, 1e4])) / 4)
    # the network's target has unit variance at every σ for data of std σd (what v-prediction buys)
    g = torch.Generator().manual_seed(1)
    x0 = d * torch.randn(50000, generator=g)
    for sigma in (0.01, 0.5, 3.0, 50.0):
        cs, co, ci, _ = diffusion.precondition(torch.tensor(sigma), d)
        x = x0 + sigma * torch.randn(50000, generator=g)
        target = (x0 - cs * x) / co
        assert abs(float(target.std()) - 1) < 0.02, sigma
        assert abs(float((ci * x).std()) - 1) < 0.02, sigma


def test_sigma_schedule_and_training_levels():
    cfg = EDMConfig(p_mean=1.0, p_std=1.2)
    levels = diffusion.sigmas(10, cfg)
    assert len(levels) == 11 and levels[-1] == 0
    assert math.isclose(levels[0], cfg.sigma_max, rel_tol=1e-5) and math.isclose(levels[-2], cfg.sigma_min, rel_tol=1e-4)
    assert (levels[:-1].diff() < 0).all()
    ln = diffusion.sample_sigma(100000, cfg, torch.Generator().manual_seed(0)).log()
    assert abs(float(ln.mean()) - 1.0) < 0.02 and abs(float(ln.std()) - 1.2) < 0.02


def test_guidance_formula():
    g = torch.Generator().manual_seed(0)
    x, d_null, d_ref, d_full = (torch.randn(4, 5, generator=g) for _ in range(4))
    assert torch.allclose(diffusion.guide(d_null, d_ref, d_full, 1.0, 1.0), d_full)      # no guidance
    assert torch.allclose(diffusion.guide(d_null, d_ref, d_full, 0.0, 0.0), d_null)
    assert torch.allclose(diffusion.guide(d_null, d_ref, d_full, 1.0, 0.0), d_ref)
    # on D it is the paper's formula on ε = (x - D) / σ
    sigma, s_ref, s_audio = 0.7, 1.5, 3.0
    eps = lambda d: (x - d) / sigma
    want = eps(d_null) + s_ref * (eps(d_ref) - eps(d_null)) + s_audio * (eps(d_full) - eps(d_ref))
    assert torch.allclose(eps(diffusion.guide(d_null, d_ref, d_full, s_ref, s_audio)), want, atol=1e-5)


def test_condition_dropout_rates():
    keep_ref, keep_audio = diffusion.drop(100000, 0.1, 0.2, torch.Generator().manual_seed(0))
    assert abs(float((~keep_ref).float().mean()) - 0.1) < 0.01                  # nothing
    assert abs(float((keep_ref & ~keep_audio).float().mean()) - 0.2) < 0.01    # the reference alone
    assert not (keep_audio & ~keep_ref).any()                                    # audio never without the reference


def test_replacement_holds_the_known_part_at_every_step():
    cfg = EDMConfig()
    g = torch.Generator().manual_seed(0)
    source = torch.randn(2, 4, 6, 6, generator=g)
    mask = (torch.rand(2, 1, 6, 6, generator=g) > 0.5).float()
    seen = []

    def denoiser(x, sigma):
        seen.append(x.clone())
        return torch.tanh(x) * 3 + 1                    # anything, even far from the source
    out = diffusion.euler(denoiser, torch.randn(2, 4, 6, 6, generator=g), cfg, steps=5,
                          replace=lambda x: mask * x + (1 - mask) * source)
    assert len(seen) == 5
    for x in seen + [out]:
        assert torch.equal(x * (1 - mask), source * (1 - mask))
    assert not torch.equal(out * mask, source * mask)


def test_loss_is_lowest_for_the_exact_denoiser():
    """The EDM loss of F derived from the exact Gaussian denoiser beats a wrong one."""
    cfg = EDMConfig(sigma_data=1.0)
    mu, s = 0.5, 0.5                                # (N(0, σd²) would make the exact F zero)
    exact = gaussian_denoiser(torch.tensor(mu), torch.tensor(s))

    def net(scale):
        def f(x_in, c_noise):
            sigma = (4 * c_noise).exp()
            c_skip, c_out, c_in, _ = diffusion.precondition(sigma, cfg.sigma_data)
            x = x_in / c_in[:, None]
            return scale * (exact(x, sigma) - c_skip[:, None] * x) / c_out[:, None]
        return f
    x0 = mu + s * torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    losses = [float(diffusion.loss(net(k), x0, cfg, generator=torch.Generator().manual_seed(1))) for k in (1.0, 0.8, 1.2)]
    assert losses[0] < min(losses[1:]), losses


def test_loss_trains_half_the_windows_on_shared_noise():
    """shared > 0: half the windows (B, T, ...) are noised with a part their frames share, as the KeySync
    sampler starts them; the other half, and every window with shared 0, independently."""
    cfg = EDMConfig()
    seen = []

    def net(x_in, c_noise):
        sigma = (4 * c_noise).exp()
        seen.append(x_in / diffusion.precondition(sigma, 1.0)[2][:, None, None] / sigma[:, None, None])   # the noise
        return torch.zeros_like(x_in)
    x0 = torch.zeros(2000, 2, 64)
    for shared in (0.0, 0.8):
        diffusion.loss(net, x0, cfg, generator=torch.Generator().manual_seed(0), shared=shared)
        e = seen[-1]
        assert abs(float(e.std()) - 1) < 0.02
        r = torch.nn.functional.cosine_similarity(e[:, 0], e[:, 1], dim=-1)       # per window, frame 0 vs 1
        together = (r > 0.4).float().mean()
        assert (abs(float(together) - 0.5) < 0.05) if shared else float(together) < 0.01
        if shared:
            assert abs(float(r[r > 0.4].mean()) - 0.8) < 0.05


def test_temporal_loss_prefers_errors_alike_across_frames():
    """temporal > 0: two networks miss every frame by the same amount, one alike in all frames, one with
    the sign flipping frame to frame (a flickering video): the per-frame loss cannot tell them apart,
    the temporal term can, and it adds nothing for the steady one."""
    cfg = EDMConfig()
    x0 = torch.randn(64, 6, 8, generator=torch.Generator().manual_seed(0))
    sign = torch.tensor([1.0, -1.0] * 3)[None, :, None]

    def net(flip):
        def f(x_in, c_noise):
            sigma = (4 * c_noise).exp()
            c_skip, c_out, c_in, _ = diffusion.precondition(sigma, cfg.sigma_data)
            x = x_in / c_in[:, None, None]
            exact = (x0 - c_skip[:, None, None] * x) / c_out[:, None, None]      # the target itself
            return exact + 0.1 * (sign if flip else 1.0)
        return f
    run = lambda flip, t: float(diffusion.loss(net(flip), x0, cfg, generator=torch.Generator().manual_seed(1),
                                               temporal=t))
    assert abs(run(False, 0.0) - run(True, 0.0)) < 1e-6
    assert abs(run(False, 1.0) - run(False, 0.0)) < 1e-6
    assert abs(run(True, 1.0) - run(True, 0.0) - 0.04) < 1e-4          # (0.1 - -0.1)² per pair of frames


def test_aux_sees_the_models_own_estimate_of_x0():
    """loss(aux=...) hands aux D(x; σ), the denoiser's estimate of x0 at the noisy x it trained on, and adds
    what aux returns (KeyFace's emotion term)."""
    cfg = EDMConfig()
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    net = lambda x, c_noise: 0.3 * x + c_noise[:, None, None, None]          # any F
    seen = {}

    def aux(d, sigma):
        seen.update(d=d, sigma=sigma)
        return torch.tensor(5.0)

    plain = diffusion.loss(net, x0, cfg, generator=torch.Generator().manual_seed(1))
    with_aux = diffusion.loss(net, x0, cfg, generator=torch.Generator().manual_seed(1), aux=aux)
    assert torch.allclose(with_aux, plain + 5.0)
    g = torch.Generator().manual_seed(1)
    sigma = diffusion.sample_sigma(3, cfg, g)
    x = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)
    assert torch.allclose(seen["sigma"], sigma)
    assert torch.allclose(seen["d"], diffusion.denoise(net, x, sigma, cfg), atol=1e-5)

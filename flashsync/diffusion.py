"""The diffusion core shared by KeySync and KeyFace (DESIGN.md §4).

EDM (Karras et al. 2022, "Elucidating the design space of diffusion-based generative
models", Table 1) with the v-prediction scaling that Stable Video Diffusion and KeySync use:
the network F sees a scaled input and predicts a scaled correction, and the denoiser is

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))
    c_skip = σd² / (σ² + σd²)    c_out = -σ σd / sqrt(σ² + σd²)    c_in = 1 / sqrt(σ² + σd²)
    c_noise = ln(σ) / 4

so F's target, (x0 - c_skip x) / c_out, has unit variance at every σ (the "v" of
v-prediction up to sign), and the loss || F - target ||² is EDM's λ(σ)-weighted
denoising loss. Training draws ln σ ~ N(P_mean, P_std²); sampling runs a deterministic
Euler solver of the probability-flow ODE, dx/dσ = (x - D(x; σ)) / σ, over Karras'
σ schedule (ρ = 7), 10 steps by default. Being first order, it under-disperses at so few steps: with
the exact denoiser of a Gaussian, 10 steps give 0.71-0.75 of the true spread, 200 steps 0.98
(tests/test_diffusion.py); EDM's Heun would double the network calls.

Multi-condition classifier-free guidance (KeySync eq. 3, after InstructPix2Pix):

    ε = ε_∅ + s_ref (ε_ref - ε_∅) + s_audio (ε_full - ε_ref)

with ε_∅ = no conditions, ε_ref = the reference only, ε_full = reference and audio. The
weights sum to one, so combining denoised outputs D is the same as combining ε = (x - D) / σ
at a fixed (x, σ); the three passes run as one batch of 3B. Condition dropout in training
(`drop`) teaches the one network all three.
"""
import dataclasses

import torch


@dataclasses.dataclass
class EDMConfig:
    sigma_data: float = 1.0     # latent std the preconditioning assumes (SVD/KeySync: 1.0; our AE's latents are near 1)
    # KeySync trains at P_mean 1.0, P_std 1.2 (median σ ≈ 2.7) for 14-frame 32x32 latents, where structure
    # survives a lot of noise because neighbouring pixels and frames are correlated. Our 16x16 crops lose
    # the mouth's shape at far lower σ, and the replaced source latent pins everything outside the mask,
    # so training centres lower (median σ ≈ 0.7); chosen, not tuned.
    p_mean: float = -0.4
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0


def precondition(sigma, sigma_data):
    """(c_skip, c_out, c_in, c_noise) for noise levels sigma (B,) -> four (B,) tensors."""
    s2, d2 = sigma ** 2, sigma_data ** 2
    c_skip = d2 / (s2 + d2)
    c_out = -sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    return c_skip, c_out, c_in, sigma.log() / 4


def _b(v, x):
    """A per-sample (B,) tensor broadcast against x (B, ...)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def denoise(net, x, sigma, cfg, **cond):
    """D(x; σ) of F = net(c_in x, c_noise, **cond). x (B, ...), sigma (B,) -> (B, ...)."""
    c_skip, c_out, c_in, c_noise = precondition(sigma, cfg.sigma_data)
    return _b(c_skip, x) * x + _b(c_out, x) * net(_b(c_in, x) * x, c_noise, **cond).to(x.dtype)


def sample_sigma(n, cfg, generator=None, device=None):
    """Training noise levels: ln σ ~ N(P_mean, P_std²), (n,)."""
    return (cfg.p_mean + cfg.p_std * torch.randn(n, generator=generator, device=device)).exp()


def loss(net, x0, cfg, weight=None, generator=None, prepare=None, shared=0.0, temporal=0.0, aux=None, **cond):
    """EDM training loss of clean latents x0 (B, ...): || F(c_in x; σ) - (x0 - c_skip x) / c_out ||²,
    averaged with `weight` (broadcastable to x0; say, where the edit mask is) -> scalar.
    prepare(x): what the network sees instead of the noisy x (KeySync: the source put back outside the mask).
    shared > 0, video x0 (B, T, ...): half the windows get noise whose fraction `shared` their frames have in
    common (`shared_noise`), so a sampler that starts from such noise asks nothing the model has not seen.
    temporal > 0, video x0: plus this times the same average of the error's frame-to-frame change,
    (err_t - err_t-1)²: a per-frame loss does not care whether two frames miss alike or differently;
    a video does (flicker). aux(denoised, σ) -> scalar: a term on the model's own estimate of x0, added."""
    b = x0.shape[0]
    sigma = sample_sigma(b, cfg, generator, x0.device)
    e = torch.randn(x0.shape, generator=generator, device=x0.device)
    if shared > 0:
        common = torch.randn(x0[:, :1].shape, generator=generator, device=x0.device)        # (B, 1, ...)
        on = _b(torch.rand(b, generator=generator, device=x0.device) < 0.5, x0)
        e = torch.where(on, mix(e, common, shared), e)
    x = x0 + _b(sigma, x0) * e
    if prepare is not None:
        x = prepare(x)
    c_skip, c_out, c_in, c_noise = precondition(sigma, cfg.sigma_data)
    target = (x0 - _b(c_skip, x0) * x) / _b(c_out, x0)
    err = net(_b(c_in, x) * x, c_noise, **cond).float() - target
    weight = torch.ones_like(err) if weight is None else weight.expand_as(err)
    mean = lambda e, w: (e * w).sum() / w.sum().clamp(min=1)
    out = mean(err ** 2, weight)
    if temporal > 0:
        # σ is one per window, so F's errors are on one scale in all its frames; where the weight is 0
        # (known content, put back by the sampler) the output is exact, its error 0
        e = err * (weight > 0)
        out = out + temporal * mean((e[:, 1:] - e[:, :-1]) ** 2, (weight[:, 1:] + weight[:, :-1]) / 2)
    if aux is not None:                     # D(x) = c_skip x + c_out F = x0 + c_out (F - target)
        out = out + aux(x0 + _b(c_out, x0) * err, sigma)
    return out


def sigmas(steps, cfg, device=None):
    """Karras et al. eq. 5: `steps` levels from σ_max down to σ_min, then 0. -> (steps + 1,)."""
    i = torch.arange(steps, device=device) / max(steps - 1, 1)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    s = (hi + i * (lo - hi)) ** cfg.rho
    return torch.cat([s, s.new_zeros(1)])


@torch.no_grad()
def euler(denoiser, noise, cfg, steps=10, replace=None, init=None, start=0):
    """Deterministic Euler solver of the probability-flow ODE from x = σ_max · noise to σ = 0.

    denoiser(x, sigma (B,)) -> D; replace(x) puts known content back (KeySync's source outside the
    mask, known frames): applied to x before every call and to the result, so the known part of
    the output is exactly the known content. init: a guess of the result, shaped like noise: the
    solver then skips the first `start` levels and begins at init + σ_start · noise (SDEdit, Meng et
    al. 2022), so what the guess fixes (coarse structure) stays and the model redraws the detail."""
    fix = replace or (lambda x: x)
    levels = sigmas(steps, cfg, noise.device)
    start = start if init is not None else 0
    x = noise * levels[start] + (init if init is not None else 0)
    for k in range(start, steps):
        s, s_next = levels[k], levels[k + 1]
        x = fix(x)
        d = fix(denoiser(x, s.expand(len(x))))
        x = d if k == steps - 1 else x + (s_next - s) * (x - d) / s      # the last step lands on D itself
    return fix(x)


def shared_noise(noise, shared, seed):
    """Starting noise of video frames (..., C, h, w) whose fraction `shared` of the variance is one draw
    (from `seed`) that every frame has in common: still N(0, 1) per frame, but frames that start alike
    are drawn alike wherever the conditions leave the sampler free (the regenerated cheeks and chin
    of KeySync stop flickering). shared = 0: independent frames."""
    if shared <= 0:
        return noise
    common = torch.randn(noise.shape[-3:], generator=torch.Generator().manual_seed(seed)).to(noise.device)
    return mix(noise, common, shared)


def mix(noise, common, shared):
    """N(0, 1) noise whose fraction `shared` of the variance is `common` (broadcast against it)."""
    return (1 - shared) ** 0.5 * noise + shared ** 0.5 * common


def guide(d_null, d_ref, d_full, s_ref, s_audio):
    """Multi-condition guidance on denoised outputs (equivalently on ε, the weights sum to 1)."""
    return d_null + s_ref * (d_ref - d_null) + s_audio * (d_full - d_ref)


def guided(denoise, s_ref=1.0, s_audio=1.0):
    """The guided denoiser (x, sigma) -> D of denoise(x, sigma, with_ref, with_audio), whose (B,) bool
    flags say which samples keep the reference and the audio: one pass when s_ref = s_audio = 1,
    else ∅ / ref / ref + audio as one batch of 3B, combined by `guide` (s_audio may be a map that
    broadcasts against D)."""
    def run(x, sigma):
        b = len(x)
        if not torch.is_tensor(s_audio) and s_ref == 1 and s_audio == 1:
            on = torch.ones(b, dtype=torch.bool, device=x.device)
            return denoise(x, sigma, on, on)
        i = torch.arange(3 * b, device=x.device)
        d = denoise(torch.cat([x, x, x]), torch.cat([sigma, sigma, sigma]), i >= b, i >= 2 * b)
        return guide(*d.chunk(3), s_ref, s_audio)
    return run


def drop(n, p_all, p_audio, generator=None, device=None):
    """Condition dropout for one batch: (keep_ref, keep_audio) bool (n,). With chance p_all a sample
    trains with no condition (ε_∅), with chance p_audio with the reference but no audio (ε_ref)."""
    u = torch.rand(n, generator=generator, device=device)
    return u >= p_all, u >= p_all + p_audio

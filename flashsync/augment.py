"""What a real microphone adds to speech: noise floors, rooms, band limits, level. (DESIGN.md §3, §5)

SynthTalk speech is clean and always equally loud; real recordings are not. The pose
model trains on SynthTalk audio passed through `augment` (random level, a noise floor,
reverberation, band limits), so what it learns is the speech, not the studio. The same
noise generators make the noisy conditions of the evaluation (`add_noise`).

All functions take and return float32 tensors of 16 kHz audio, (N,) or (B, N), and draw
their randomness from a torch.Generator, so a training run is reproducible.

Noise floors (`noise`), each (n,) with unit RMS where it is active:
  white    flat spectrum (electronics, hiss)
  pink     1/f power (a room's ambience, fans)
  brown    1/f^2 power (traffic rumble, air conditioning)
  hum      mains at 50 or 60 Hz with decaying harmonics and a little buzz
  breath   breathing through the nose: band-passed noise in slow in/out bursts
Levels are RMS in dB relative to the clean speech's peak sample ("re peak").
"""
import math

import torch

from flashsync import SR

KINDS = ("white", "pink", "brown", "hum", "breath")


def _uniform(lo, hi, generator, shape=()):
    return lo + (hi - lo) * torch.rand(shape, generator=generator)


def _shaped(n, power, generator):
    """Gaussian noise (n,) whose power spectrum goes as f^-power (0 white, 1 pink, 2 brown), unit RMS."""
    spec = torch.fft.rfft(torch.randn(n, generator=generator))
    f = torch.fft.rfftfreq(n, 1 / SR).clamp(min=20.0)           # no energy piling up below 20 Hz
    x = torch.fft.irfft(spec * f ** (-power / 2), n)
    return x / x.pow(2).mean().sqrt().clamp(min=1e-12)


def _hum(n, generator):
    t = torch.arange(n) / SR
    base = 50.0 if torch.rand((), generator=generator) < 0.5 else 60.0
    x = sum(torch.sin(2 * math.pi * base * k * t + _uniform(0, 2 * math.pi, generator)) / k ** 1.2
            for k in range(1, 8))
    x = x + 0.05 * _shaped(n, 0, generator)                     # the buzz around it
    return x / x.pow(2).mean().sqrt()


def _breath(n, generator):
    """Breaths every 2.5-4.5 s: each a 0.6-1.2 s swell of noise shaped like a breathy vowel."""
    x = _shaped(n, 0.5, generator)
    spec = torch.fft.rfft(x)
    f = torch.fft.rfftfreq(n, 1 / SR)
    centre = _uniform(800, 2000, generator)
    spec = spec * torch.exp(-0.5 * (torch.log2(f.clamp(min=50) / centre) / 1.2) ** 2)   # ~2.4 octaves wide
    x = torch.fft.irfft(spec, n)
    env = torch.zeros(n)
    t = float(_uniform(0.0, 2.0, generator))
    while t * SR < n:
        dur = float(_uniform(0.6, 1.2, generator))
        a, b = int(t * SR), min(n, int((t + dur) * SR))
        if b > a:
            env[a:b] = torch.sin(math.pi * torch.arange(b - a) / (b - a)) ** 2
        t += dur + float(_uniform(1.5, 3.5, generator))
    active = env > 0.5
    x = x * env
    rms = x[active].pow(2).mean().sqrt() if active.any() else x.pow(2).mean().sqrt()
    return x / rms.clamp(min=1e-12)


def noise(kind, n, generator):
    """A noise floor of `kind` (see KINDS), (n,) float32 with unit RMS where it is active."""
    if kind in ("white", "pink", "brown"):
        return _shaped(n, KINDS.index(kind), generator)
    if kind == "hum":
        return _hum(n, generator)
    if kind == "breath":
        return _breath(n, generator)
    raise ValueError(f"unknown noise {kind!r}: one of {', '.join(KINDS)}")


def add_noise(audio, kind, db, generator, peak=None):
    """audio (N,) plus a `kind` noise floor at `db` dB RMS re `peak` (default: the audio's peak sample)."""
    peak = audio.abs().max().clamp(min=1e-6) if peak is None else peak
    return audio + noise(kind, audio.shape[-1], generator) * peak * 10 ** (db / 20)


def reverb(audio, rt60, wet, generator):
    """A room: convolve (N,) with exponentially decaying noise of reverberation time rt60 s, mixed `wet`."""
    n = int(rt60 * SR)
    t = torch.arange(n) / SR
    ir = torch.randn(n, generator=generator) * torch.exp(-6.9 * t / rt60)    # -60 dB at rt60
    ir = ir / ir.pow(2).sum().sqrt()
    m = audio.shape[-1] + n
    tail = torch.fft.irfft(torch.fft.rfft(audio, m) * torch.fft.rfft(ir, m), m)[..., :audio.shape[-1]]
    dry = audio.pow(2).mean().sqrt()
    tail = tail * dry / tail.pow(2).mean().sqrt().clamp(min=1e-9)
    return (1 - wet) * audio + wet * tail


def _band_gain(f, low_hz, high_hz):
    """Smooth band-pass gain low_hz .. high_hz at frequencies f: edges (B, 1) or scalars, f (F,) -> (B, F)."""
    return torch.sigmoid((f - low_hz) / (0.15 * low_hz + 1)) * torch.sigmoid((high_hz - f) / (0.05 * high_hz))


def band_limit(audio, low_hz, high_hz):
    """Keep low_hz .. high_hz (smooth edges, in the FFT): a phone line, a cheap microphone, a codec."""
    n = audio.shape[-1]
    gain = _band_gain(torch.fft.rfftfreq(n, 1 / SR), torch.tensor(float(low_hz)), torch.tensor(float(high_hz)))
    return torch.fft.irfft(torch.fft.rfft(audio) * gain, n)


def augment(audio, generator=None, p_noise=0.8, p_reverb=0.3, p_band=0.3, p_colour=0.7, speech_peak=0.3):
    """A random recording of each clean clip of `audio` (B, N): colouring, room, band limits, noise floor, level.

    colour  a microphone's and room's EQ: a slope of -4..4 dB per octave around 1 kHz and up to three
            smooth +-6 dB bumps
    room    reverberation of 0.15-0.7 s, 10-50 % wet
    band    50-350 Hz to 3-7.5 kHz (phone lines, cheap microphones, codecs)
    noise   one of KINDS at -65..-25 dB RMS re the louder of the clip's peak and `speech_peak`
            (SynthTalk's typical peak), so a window of silence gets a realistic floor too
    level   -24..+6 dB, clipped at full scale
    Batched: every step is one FFT over the whole batch, each clip with its own draws."""
    b, n = audio.shape
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, 1, generator=generator)          # one draw per clip
    on = lambda p: (torch.rand(b, 1, generator=generator) < p).float()
    peak = audio.abs().amax(1, keepdim=True).clamp(min=speech_peak)
    f = torch.fft.rfftfreq(n, 1 / SR)
    octave = torch.log2(f.clamp(min=60) / 1000)                                      # (F,)
    db = u(-4, 4) * octave
    for _ in range(3):
        db = db + u(-6, 6) * on(0.6) * torch.exp(-0.5 * ((octave - u(-3.5, 2.8)) / u(0.3, 1.5)) ** 2)
    gain = 10 ** (on(p_colour) * db / 20)
    band = on(p_band)
    gain = gain * (band * _band_gain(f, u(50, 350), u(3000, 7500)) + (1 - band))
    x = torch.fft.irfft(torch.fft.rfft(audio) * gain, n)
    # room: exponentially decaying noise, a linear convolution in one FFT for the batch
    rt60, wet = u(0.15, 0.7), u(0.1, 0.5) * on(p_reverb)
    k = int(0.7 * SR)
    ir = torch.randn(b, k, generator=generator) * torch.exp(-6.9 * (torch.arange(k) / SR) / rt60)
    ir = ir / ir.pow(2).sum(1, keepdim=True).sqrt()
    tail = torch.fft.irfft(torch.fft.rfft(x, n + k) * torch.fft.rfft(ir, n + k), n + k)[:, :n]
    tail = tail * x.pow(2).mean(1, keepdim=True).sqrt() / tail.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-9)
    x = (1 - wet) * x + wet * tail
    # noise floor: white, pink, brown in one FFT; hum and breath clip by clip
    kind = torch.randint(len(KINDS), (b,), generator=generator)
    power = kind.clamp(max=2).float()[:, None]
    floor = torch.fft.irfft(torch.fft.rfft(torch.randn(b, n, generator=generator)) * f.clamp(min=20.0) ** (-power / 2), n)
    floor = floor / floor.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-12)
    for i in torch.nonzero(kind >= 3).flatten().tolist():
        floor[i] = noise(KINDS[int(kind[i])], n, generator)
    x = x + floor * peak * 10 ** (u(-65, -25) / 20) * on(p_noise)
    return (x * 10 ** (u(-24, 6) / 20)).clamp(-1, 1)


def resample(audio, n):
    """Band-limited resampling of (B, N) audio to n samples (FFT: the spectrum cut or zero-padded). Played at
    the same rate, the audio runs N / n times faster and every frequency moves up by that factor.
    (Not audio.resample: its polyphase filter needs rates with small common terms; a random speaking rate
    has none, and one FFT serves the whole batch at any ratio.)"""
    spec = torch.fft.rfft(audio)
    k = n // 2 + 1
    spec = spec[:, :k] if spec.shape[1] >= k else torch.nn.functional.pad(spec, (0, k - spec.shape[1]))
    return torch.fft.irfft(spec, n) * (n / audio.shape[-1])


def change_rate(audio, tracks, labels, rate, frame):
    """One speaking rate for a batch: audio (B, L * frame), per-frame tracks (B, L, C) (linearly
    interpolated) and labels (B, L) int (nearest; or None), `rate` times faster (> 1) or slower, voice and
    vocal tract scaled with it (as a faster, smaller or larger speaker). -> the same, L' = floor(L / rate) frames.
    Why: a model that saw one tempo hears a 30 ms closure of a fast talker as no closure at all."""
    n = int(tracks.shape[1] / rate)
    audio = resample(audio, int(round(audio.shape[-1] / rate)))[:, :n * frame]
    t = (torch.arange(n, device=tracks.device) + 0.5) * rate - 0.5          # output frame -> input frame
    lo = t.floor().clamp(0, tracks.shape[1] - 1).long()
    hi = (lo + 1).clamp(max=tracks.shape[1] - 1)
    w = (t - lo).clamp(0, 1)[None, :, None]
    tracks = tracks[:, lo] * (1 - w) + tracks[:, hi] * w
    labels = None if labels is None else labels[:, (t + 0.5).floor().clamp(0, labels.shape[1] - 1).long()]
    return audio, tracks, labels


def mask_bands(mel, generator=None, masks=2, width=12, p=0.8):
    """SpecAugment's frequency masking on normalised log-mel (B, M, 80): up to `masks` bands of up to
    `width` mel channels set to the mean (0), so no single band's exact level can carry a decision."""
    mel = mel.clone()
    b, _, n = mel.shape
    for i in range(b):
        if torch.rand((), generator=generator) >= p:
            continue
        for _ in range(masks):
            w = int(torch.randint(width + 1, (), generator=generator))
            lo = int(torch.randint(n - w + 1, (), generator=generator))
            mel[i, :, lo:lo + w] = 0.0
    return mel

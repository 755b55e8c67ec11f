"""SynthTalk speech: a phoneme timeline, its mouth (viseme) trajectory, and source-filter audio.

One timeline drives both the audio and the mouth, so they are in sync by
construction (DESIGN.md §3). Everything is deterministic given a numpy Generator.

Timeline: a list of segments (start s, end s, phoneme id, label) with labels
0 silence, 1 speech, 2 laugh, 3 sigh. Speech is phrases of words of CV(C)
syllables; arousal raises the speaking rate.

Audio (source-filter, in the STFT domain so a time-varying filter is one
multiply): a glottal pulse train at the speaker's pitch (prosody, arousal) is
shaped by the product of formant resonances; fricatives and plosive bursts are
band-passed noise; nasals are a low, quiet hum; breath (laughs, sighs) is noise
through the vocal tract; pauses are faint noise. Overlap-added back with istft.

Mouth: each phoneme has targets (open, width, round, teeth); bilabials and
silence aim below zero so the lips really close. A critically damped spring
(co-articulation) smooths the targets; the result is sampled at video frame
centres, the same instants the audio windows are centred on.
"""
import numpy as np
import torch

from flashsync import FPS, SR

SILENCE, SPEECH, LAUGH, SIGH = 0, 1, 2, 3
LABELS = ("silence", "speech", "laugh", "sigh")

# name: (kind, (open, width, round, teeth), (F1, F2, F3) Hz, duration range ms)
# Formants of the vowels follow DESIGN.md §3 (Peterson & Barney style averages).
PHONEMES = {
    "sil": ("pause", (-0.3, 0.5, 0.0, 0.0), (500, 1500, 2500), (60, 120)),
    "a": ("vowel", (1.0, 0.65, 0.0, 0.4), (730, 1090, 2440), (100, 190)),
    "e": ("vowel", (0.6, 0.85, 0.0, 0.7), (530, 1840, 2480), (90, 170)),
    "i": ("vowel", (0.35, 1.0, 0.0, 0.9), (270, 2290, 3010), (90, 160)),
    "o": ("vowel", (0.7, 0.35, 0.8, 0.2), (570, 840, 2410), (100, 180)),
    "u": ("vowel", (0.3, 0.15, 1.0, 0.0), (300, 870, 2240), (90, 160)),
    "m": ("nasal", (-0.5, 0.5, 0.0, 0.0), (250, 1000, 2200), (80, 120)),
    "n": ("nasal", (0.2, 0.6, 0.0, 0.6), (250, 1400, 2500), (60, 100)),
    "p": ("plosive", (-0.5, 0.5, 0.0, 0.0), (300, 800, 2200), (80, 120)),
    "b": ("plosive", (-0.5, 0.5, 0.0, 0.0), (300, 800, 2200), (80, 110)),
    "t": ("plosive", (0.25, 0.6, 0.0, 0.7), (300, 1700, 2600), (60, 100)),
    "k": ("plosive", (0.4, 0.55, 0.0, 0.3), (300, 2000, 2500), (60, 100)),
    "f": ("fricative", (0.08, 0.6, 0.0, 1.0), (500, 1500, 2500), (70, 120)),
    "s": ("fricative", (0.15, 0.85, 0.0, 1.0), (500, 1500, 2500), (70, 130)),
    "sh": ("fricative", (0.25, 0.45, 0.7, 0.8), (500, 1500, 2500), (70, 130)),
    "l": ("approximant", (0.35, 0.6, 0.0, 0.5), (360, 1300, 2700), (50, 90)),
    "w": ("approximant", (0.15, 0.2, 1.0, 0.0), (300, 610, 2200), (50, 90)),
    "laugh": ("laugh", (0.75, 0.9, 0.0, 0.8), (730, 1200, 2500), (0, 0)),
    "sigh": ("sigh", (0.35, 0.5, 0.1, 0.0), (600, 1200, 2400), (0, 0)),
}
NAMES = list(PHONEMES)
ID = {name: i for i, name in enumerate(NAMES)}
BILABIALS = ("m", "p", "b")
_VOWELS = [n for n, p in PHONEMES.items() if p[0] == "vowel"]
_ONSETS = ["m", "n", "p", "b", "t", "k", "f", "s", "sh", "l", "w"]
_CODAS = ["m", "n", "p", "t", "k", "s", "f", "l"]
# noise band of fricatives and bursts: (centre Hz, width in octaves, level)
_NOISE = {"f": (5000, 1.5, 0.25), "s": (6000, 0.5, 0.6), "sh": (3200, 0.6, 0.5),
          "p": (1200, 1.5, 0.5), "b": (1000, 1.5, 0.4), "t": (4500, 1.0, 0.6), "k": (2200, 0.6, 0.6)}


# ----------------------------------------------------------------------------- timeline

def timeline(rng, seconds, arousal_at, nsv=0.0):
    """Random segments covering [0, seconds): list of (start, end, phoneme id, label).

    arousal_at(t) -> arousal in [-1, 1] sets the speaking rate; nsv is the chance
    that an event is a laugh or a sigh instead of a phrase.
    """
    segs, t = [], 0.0

    def add(name, dur, label):
        nonlocal t
        segs.append((t, t + dur, ID[name], label))
        t += dur

    add("sil", rng.uniform(0.1, 0.4), SILENCE)
    while t < seconds:
        if rng.random() < nsv:
            if rng.random() < 0.5:
                add("laugh", rng.uniform(0.8, 1.6), LAUGH)
            else:
                add("sigh", rng.uniform(0.8, 1.4), SIGH)
        else:
            for word in range(rng.integers(2, 6)):
                for syl in range(rng.integers(1, 4)):
                    rate = 1.0 + 0.25 * arousal_at(t)
                    parts = ([rng.choice(_ONSETS)] if rng.random() < 0.7 else []) + [rng.choice(_VOWELS)]
                    parts += [rng.choice(_CODAS)] if rng.random() < 0.3 else []
                    for name in parts:
                        lo, hi = PHONEMES[name][3]
                        dur = rng.uniform(lo, hi) / 1000
                        # bilabials keep their full length: the lips must have time to close
                        add(name, dur if name in BILABIALS else dur / rate, SPEECH)
                if rng.random() < 0.3:
                    add("sil", rng.uniform(0.03, 0.08), SILENCE)
        add("sil", rng.uniform(0.2, 0.7), SILENCE)
    return segs


def _lookup(segs, times):
    """Index of the segment containing each time (times clipped into the timeline)."""
    starts = np.array([s[0] for s in segs])
    return np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(segs) - 1)


def _burst_phase(segs, idx, times, rate=5.0):
    """Laugh bursts: a 0..1 envelope pulsing at `rate` Hz inside laugh segments."""
    start = np.array([s[0] for s in segs])[idx]
    return 0.5 - 0.5 * np.cos(2 * np.pi * rate * (times - start))


def frame_labels(segs, n_frames):
    """Per video frame (at its centre): phoneme id and label, (T,) int arrays each."""
    idx = _lookup(segs, (np.arange(n_frames) + 0.5) / FPS)
    return np.array([segs[i][2] for i in idx]), np.array([segs[i][3] for i in idx])


# ----------------------------------------------------------------------------- mouth

def mouth_track(segs, n_frames, laugh_rate=5.0, omega=70.0):
    """Mouth parameters at each video frame centre -> (T, 4) float32: open, width, round, teeth."""
    dt = 1e-3
    times = np.arange(0, n_frames / FPS + dt, dt)
    idx = _lookup(segs, times)
    target = np.array([PHONEMES[NAMES[segs[i][2]]][1] for i in idx], dtype=np.float64)  # (N, 4)
    kind = np.array([segs[i][3] for i in idx])
    burst = _burst_phase(segs, idx, times, laugh_rate)
    target[kind == LAUGH, 0] = 0.55 + 0.45 * burst[kind == LAUGH]    # "ha ha": the jaw pumps
    # critically damped spring toward the targets (co-articulation): its impulse
    # response is w^2 t e^(-w t), so the spring is one convolution (start held at rest)
    k = np.arange(int(10 / omega / dt)) * dt
    h = omega * omega * k * np.exp(-omega * k) * dt                       # (K,) sums to ~1
    padded = np.concatenate([np.repeat(target[:1], len(h), 0), target])
    out = np.stack([np.convolve(padded[:, c], h / h.sum())[len(h):len(h) + len(times)] for c in range(4)], 1)
    centres = np.round((np.arange(n_frames) + 0.5) / FPS / dt).astype(int)
    track = out[centres]
    return np.clip(track, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- audio

def _resonances(freqs, formants, bandwidths):
    """|H(f)| of cascaded 2nd-order resonators, 1 at 0 Hz: freqs (F,), formants (C, K) -> (C, F)."""
    f = freqs[None, None, :]
    fk, bk = formants[..., None], bandwidths[..., None]
    h = fk * fk / torch.sqrt((fk * fk - f * f) ** 2 + (bk * f) ** 2)
    return h.prod(dim=1)


def synthesize(rng, segs, n_samples, pitch, formant_scale, arousal_at, loudness=1.0, laugh_rate=5.0):
    """Source-filter speech for a timeline -> (n_samples,) float32 tensor at 16 kHz."""
    n_fft, hop = 512, 128
    n_ctrl = n_samples // hop + 1
    t_ctrl = np.arange(n_ctrl) * hop / SR                         # STFT frame centres
    idx = _lookup(segs, t_ctrl)
    names = [NAMES[segs[i][2]] for i in idx]
    label = np.array([segs[i][3] for i in idx])
    seg_start = np.array([segs[i][0] for i in idx])
    seg_len = np.array([segs[i][1] - segs[i][0] for i in idx])
    pos = (t_ctrl - seg_start) / seg_len                           # 0..1 inside the segment
    arousal = np.array([arousal_at(t) for t in t_ctrl])

    formants = np.array([PHONEMES[n][2] for n in names], dtype=np.float64) * formant_scale
    voiced = np.zeros(n_ctrl)
    noise = np.zeros(n_ctrl)
    breath = np.zeros(n_ctrl)
    band = np.tile([3000.0, 1.0], (n_ctrl, 1))
    for i, n in enumerate(names):
        kind = PHONEMES[n][0]
        if kind == "vowel":
            voiced[i] = 1.0
        elif kind == "nasal":
            voiced[i] = 0.35
        elif kind == "approximant":
            voiced[i] = 0.6
        elif kind == "fricative":
            noise[i] = _NOISE[n][2]
            band[i] = _NOISE[n][:2]
        elif kind == "plosive":
            if pos[i] > 0.7:                                       # closure, then the burst
                noise[i] = _NOISE[n][2] * np.exp(-(pos[i] - 0.7) * 10)
                band[i] = _NOISE[n][:2]
            elif n == "b":
                voiced[i] = 0.1                                    # voice bar under closure
        elif kind == "laugh":
            b = 0.5 - 0.5 * np.cos(2 * np.pi * laugh_rate * (t_ctrl[i] - seg_start[i]))
            voiced[i], breath[i] = 0.7 * b ** 2, 0.5 * b
        elif kind == "sigh":
            env = min(1.0, pos[i] / 0.2) * (1 - pos[i]) ** 0.7     # quick rise, long fall
            breath[i] = 0.8 * env
            band[i] = (2500 * (1 - 0.75 * pos[i]), 2.0)            # falling spectrum
    smooth = lambda x, k: np.apply_along_axis(lambda c: np.convolve(c, np.ones(k) / k, mode="same"), 0, x)
    formants = smooth(formants, 5)                                  # ~40 ms formant glides
    voiced, noise, breath = smooth(voiced, 3), smooth(noise, 2), smooth(breath, 3)
    gain = loudness * (1 + 0.5 * arousal)

    # glottal source at the sample rate: pitch with prosody, a Rosenberg-like pulse, lip radiation
    t = np.arange(n_samples) / SR
    ar = np.interp(t, t_ctrl, arousal)
    lab = np.interp(t, t_ctrl, (label == LAUGH).astype(float))
    drift = sum(rng.uniform(0.02, 0.05) * np.sin(2 * np.pi * rng.uniform(0.2, 1.2) * t + rng.uniform(0, 6.3))
                for _ in range(3))
    f0 = pitch * (1 + 0.15 * ar + 0.3 * lab) * (1 + drift)
    phase = np.cumsum(f0 / SR) % 1.0
    pulse = np.where(phase < 0.4, 0.5 - 0.5 * np.cos(np.pi * phase / 0.4),
                     np.where(phase < 0.6, np.cos(np.pi * (phase - 0.4) / 0.4), 0.0))
    source = np.diff(pulse, prepend=0.0) * 8

    win = torch.hann_window(n_fft)
    stft = lambda x: torch.stft(torch.from_numpy(x).float(), n_fft, hop, window=win, return_complex=True)  # (F, C)
    freqs = torch.arange(n_fft // 2 + 1).float() * SR / n_fft
    fk = torch.from_numpy(np.concatenate([formants, np.tile([3500.0 * formant_scale, 4500.0 * formant_scale], (n_ctrl, 1))], 1)).float()
    tract = _resonances(freqs, fk, torch.tensor([80.0, 100.0, 150.0, 250.0, 300.0]).expand_as(fk)).T  # (F, C)
    nasal = torch.from_numpy(np.array([PHONEMES[n][0] == "nasal" for n in names])).float()
    tract = tract * (1 - nasal) + nasal * tract.clamp(max=3.0) * (freqs[:, None] < 1500).float()  # hum: low only
    centre, octaves = torch.from_numpy(band).float().T
    hiss = torch.exp(-0.5 * (torch.log2(freqs[:, None].clamp(min=50) / centre) / (octaves / 2)) ** 2)  # (F, C)
    white = lambda: rng.standard_normal(n_samples)
    spec = (stft(source) * tract * torch.from_numpy(voiced * gain).float()
            + stft(white()) * hiss * torch.from_numpy(noise * gain).float()
            + stft(white()) * tract.sqrt() * hiss.sqrt() * torch.from_numpy(breath * gain).float() * 0.5)
    audio = torch.istft(spec[:, :n_ctrl], n_fft, hop, window=win, length=n_samples)
    audio = audio * 0.12 + 0.0005 * torch.from_numpy(white()).float()   # level, then a faint noise floor
    return torch.tanh(audio).float()                                     # soft limit into [-1, 1]

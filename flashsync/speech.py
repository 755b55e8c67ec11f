"""SynthTalk speech: an English-like phoneme timeline, the articulators it moves, and the sound they make.

One timeline drives both the mouth and the audio, so they are in sync by construction,
and the audio is made *from the articulators*, as in a real vocal tract: the same lip
trajectory that the video shows seals the sound at a bilabial closure, pulls the
formants down as the lips close and lets them rise as the jaw opens (DESIGN.md §3).
Everything is deterministic given a numpy Generator.

Timeline: phrases of words of syllables (onset cluster, vowel, coda cluster) from an
English-like inventory of 39 phonemes; one stressed syllable per content word, reduced
vowels elsewhere, phrase-final lengthening, a speaking rate per clip that arousal
raises; pauses (some with a quiet breath through the nose), laughs and sighs. A
segment is (start s, end s, phoneme id, label, stress) with labels 0 silence,
1 speech, 2 laugh, 3 sigh.

Mouth: each phoneme has lip targets (open, width, round, teeth) and a `lock`: how
firmly the lips hold them rather than anticipating the next vowel (1 for p b m and
vowels, 0 for h). Diphthongs glide. A critically damped spring smooths the targets
(co-articulation); bilabials and silence aim below zero so the lips really close.

Sound (source-filter, in the STFT domain so a time-varying filter is one multiply):
  tract    formant targets (a consonant's are its loci) through a slower spring (the
           tongue); the lip aperture from the mouth track lowers F1 and F2 as the lips
           close and seals the oral sound when they meet; rounding lowers F2 and F3.
  sources  a glottal pulse train (the speaker's pitch with declination, accents and
           jitter, shimmer, breathiness, spectral tilt); a nasal branch (murmur with a
           place-dependent anti-resonance) for m n ng; a voice bar through the cheeks
           in voiced closures; frication noise shaped by place; release bursts and
           aspiration after p t k; breath for h, laughs, sighs and nose breaths.
"""

import numpy as np
import torch

from flashsync import FPS, SR
from flashsync.phonemes import (  # noqa: F401 (re-exported: speech.SILENCE, speech.NAMES, ...)
    SILENCE, SPEECH, LAUGH, SIGH, LABELS, Phone, PHONEMES, NAMES, ID, BILABIALS, VOWELS, FULL, REDUCED,
    ONSETS, CODAS, CLUSTER, MIN_CLOSURE, HISS, BURST, VOT, ANTI)

# ----------------------------------------------------------------------------- timeline

def _syllable(rng, stressed, after_vowel):
    """Phoneme names of one syllable (after a vowel it almost always starts with a consonant)."""
    pick = lambda options: (lambda name: list(CLUSTER.get(name, [name])))(str(rng.choice(options)))
    out = pick(ONSETS) if rng.random() < (0.95 if after_vowel else 0.7) else []
    out.append(str(rng.choice(FULL if stressed else REDUCED)))
    return out + (pick(CODAS) if rng.random() < 0.45 else [])


def timeline(rng, seconds, arousal_at, nsv=0.0):
    """Random segments covering [0, seconds): list of (start, end, phoneme id, label, stress).

    arousal_at(t) -> arousal in [-1, 1] raises the speaking rate; nsv is the chance that
    an event is a laugh or a sigh instead of a phrase.
    """
    segs, t = [], 0.0
    rate = rng.uniform(0.8, 1.4)                                  # this speaker's pace today

    def add(name, dur, label, stress=0):
        nonlocal t
        segs.append((t, t + dur, ID[name], label, stress))
        t += dur

    def pause(lo, hi):
        dur = rng.uniform(lo, hi)
        if dur > 0.35 and rng.random() < 0.35:                    # a quiet breath through the nose, then speech
            gap = rng.uniform(0.05, 0.1)
            breath = min(dur - 2 * gap, rng.uniform(0.3, 0.8))
            add("sil", dur - breath - gap, SILENCE)
            add("breath", breath, SILENCE)
            add("sil", gap, SILENCE)
        else:
            add("sil", dur, SILENCE)

    # a recording often starts, and a speaker often waits, for seconds: long silences (with the room's
    # noise, in training) must keep the mouth shut even when no speech is near to compare them with
    long = max(0.4, min(3.0, seconds / 2))                        # a short clip keeps half for speech
    pause(0.1, long if rng.random() < 0.3 else 0.4)
    while t < seconds:
        if rng.random() < nsv:
            if rng.random() < 0.5:
                add("laugh", rng.uniform(0.8, 1.6), LAUGH)
            else:
                add("sigh", rng.uniform(0.8, 1.4), SIGH)
        else:
            words = rng.integers(2, 8)
            for w in range(words):
                n_syl = int(rng.choice([1, 1, 1, 2, 2, 3]))
                content = n_syl > 1 or rng.random() < 0.6          # short function words go unstressed
                stress = int(rng.integers(n_syl)) if content else -1
                for k in range(n_syl):
                    names = _syllable(rng, k == stress, bool(segs) and PHONEMES[NAMES[segs[-1][2]]].kind == "vowel")
                    speed = rate * (1 + 0.25 * arousal_at(t))
                    final = w == words - 1 and k == n_syl - 1
                    for name in names:
                        lo, hi = PHONEMES[name].ms
                        dur = rng.uniform(lo, hi) / 1000 / speed
                        if PHONEMES[name].kind == "vowel":
                            dur *= (1.3 if k == stress else 0.85) * (1.35 if final else 1.0)
                        if name in BILABIALS:
                            dur = max(dur, MIN_CLOSURE)
                        add(name, dur, SPEECH, int(k == stress))
                if rng.random() < 0.12:
                    add("sil", rng.uniform(0.03, 0.1), SILENCE)     # a hesitation between words
        pause(0.15, max(0.8, long) if rng.random() < 0.15 else 0.8)
    return segs


def _lookup(segs, times):
    """Index of the segment containing each time (times clipped into the timeline)."""
    starts = np.array([s[0] for s in segs])
    return np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(segs) - 1)


def frame_labels(segs, n_frames):
    """Per video frame (at its centre): phoneme id and label, (T,) int arrays each."""
    idx = _lookup(segs, (np.arange(n_frames) + 0.5) / FPS)
    return np.array([segs[i][2] for i in idx]), np.array([segs[i][3] for i in idx])


# ----------------------------------------------------------------------------- articulators

def _spring(target, omega, dt):
    """Critically damped spring toward target (N, C) sampled every dt: one convolution with its
    impulse response w^2 t e^(-w t) (the start held at rest) -> (N, C)."""
    k = np.arange(int(10 / omega / dt)) * dt
    h = omega * omega * k * np.exp(-omega * k)
    h /= h.sum()
    padded = np.concatenate([np.repeat(target[:1], len(h), 0), target])
    return np.stack([np.convolve(padded[:, c], h)[len(h):len(h) + len(target)] for c in range(target.shape[1])], 1)


def _targets(segs, times, field, laugh_rate=5.0):
    """Per-time targets (N, C) of a Phone field ('mouth' or 'formants') with co-articulation:
    a consonant's lips lean toward the next vowel by (1 - lock); diphthongs glide."""
    nxt = {}                                    # segment -> the next vowel of its phrase (or itself)
    following = None
    for i in range(len(segs) - 1, -1, -1):
        name = NAMES[segs[i][2]]
        if PHONEMES[name].kind == "vowel":
            following = name
        elif PHONEMES[name].kind == "pause":
            following = None
        nxt[i] = following
    idx = _lookup(segs, times)
    out = np.empty((len(times), len(getattr(PHONEMES["sil"], field))))
    for i in np.unique(idx):
        sel = idx == i
        s, e, pid, label = segs[i][:4]
        p = PHONEMES[NAMES[pid]]
        own = np.array(getattr(p, field), np.float64)
        if p.place in PHONEMES and PHONEMES[p.place].kind == "vowel":       # diphthong: glide after 30 %
            to = np.array(getattr(PHONEMES[p.place], field), np.float64)
            w = np.clip(((times[sel] - s) / max(e - s, 1e-6) - 0.3) / 0.7, 0, 1)[:, None]
            out[sel] = own * (1 - w) + to * w
            continue
        if field == "mouth" and p.lock < 1 and nxt[i] is not None:
            own = p.lock * own + (1 - p.lock) * np.array(PHONEMES[nxt[i]].mouth)
        out[sel] = own
    if field == "mouth":                                                     # "ha ha": the jaw pumps
        laugh = np.array([segs[i][3] for i in idx]) == LAUGH
        out[laugh, 0] = 0.55 + 0.45 * _burst_phase(segs, idx, times, laugh_rate)[laugh]
    return out


def _burst_phase(segs, idx, times, rate=5.0):
    """Laugh bursts: a 0..1 envelope pulsing at `rate` Hz inside laugh segments."""
    start = np.array([s[0] for s in segs])[idx]
    return 0.5 - 0.5 * np.cos(2 * np.pi * rate * (times - start))


def lips(segs, seconds, omega=70.0, dt=1e-3, lead=0.025):
    """The mouth every dt seconds over [0, seconds] -> times (N,), (N, 4) open, width, round, teeth, unclipped
    (the lips press together where open < 0). The lips move `lead` s ahead of the segments, so that
    they meet about when a bilabial's segment (and its silence) starts, as in speech."""
    times = np.arange(0, seconds + dt, dt)
    return times, _spring(_targets(segs, times + lead, "mouth"), omega, dt)


def mouth_track(segs, n_frames, omega=70.0):
    """Mouth parameters at each video frame centre -> (T, 4) float32: open, width, round, teeth."""
    times, m = lips(segs, n_frames / FPS, omega)
    centres = np.round((np.arange(n_frames) + 0.5) / FPS / 1e-3).astype(int)
    return np.clip(m[centres], 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- sound

def _resonances(freqs, formants, bandwidths):
    """|H(f)| of cascaded 2nd-order resonators, 1 at 0 Hz: freqs (F,), formants (C, K) -> (C, F)."""
    f = freqs[None, None, :]
    fk, bk = formants[..., None], bandwidths[..., None]
    h = fk * fk / torch.sqrt((fk * fk - f * f) ** 2 + (bk * f) ** 2)
    return h.prod(dim=1)


def _zero(freqs, fz, bz):
    """|H(f)| of an anti-resonance at fz (C,) Hz, bandwidth bz, 1 at 0 Hz -> (C, F)."""
    f = freqs[None, :]
    fz = fz[:, None]
    return torch.sqrt((fz * fz - f * f) ** 2 + (bz * f) ** 2) / (fz * fz)


def _band(freqs, centre, octaves):
    """Gaussian bump on a log-frequency axis: centre (C,), octaves (C,) -> (C, F)."""
    return torch.exp(-0.5 * (torch.log2(freqs[None].clamp(min=50) / centre[:, None]) / (octaves[:, None] / 2)) ** 2)


def _smooth(x, k):
    """Moving average over the first axis (k frames), same length."""
    k = min(k, len(x))                       # np.convolve's "same" returns the longer of the two
    if k <= 1:
        return x
    kernel = np.ones(k) / k
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, x) if x.ndim > 1 else \
        np.convolve(x, kernel, mode="same")


def synthesize(rng, segs, n_samples, pitch, formant_scale, arousal_at, loudness=1.0, laugh_rate=5.0):
    """Speech for a timeline, made by the articulators of its mouth track -> (n_samples,) float32 at 16 kHz."""
    n_fft, hop = 512, 128
    n_ctrl = n_samples // hop + 1
    tc = np.arange(n_ctrl) * hop / SR                                 # STFT frame centres
    idx = _lookup(segs, tc)
    phones = [PHONEMES[NAMES[segs[i][2]]] for i in idx]
    kind = np.array([p.kind for p in phones])
    place = np.array([p.place or "" for p in phones])
    voiced = np.array([p.voiced for p in phones], np.float64)
    label = np.array([segs[i][3] for i in idx])
    stress = np.array([segs[i][4] for i in idx], np.float64)
    start = np.array([segs[i][0] for i in idx])
    end = np.array([segs[i][1] for i in idx])
    pos = (tc - start) / np.maximum(end - start, 1e-6)               # 0..1 inside the segment
    arousal = np.array([arousal_at(t) for t in tc])
    # this clip's voice and recording: each clip draws its own, so what a model learns is speech, not one synthesiser
    voice = dict(presence=rng.uniform(0.3, 2.5),                          # dB per octave / 6 above 1 kHz
                 breathy=rng.uniform(0.02, 0.2), jitter=rng.uniform(0.003, 0.012), shimmer=rng.uniform(0.02, 0.08),
                 bw=rng.uniform(0.4, 1.3), f45=rng.uniform(0.93, 1.08),        # formant bandwidths, F4 and F5
                 nasal=rng.uniform(0.5, 1.3), nasal_hi=rng.uniform(0.02, 0.3),  # murmur level and brightness
                 leak=rng.uniform(0.0, 0.3),                                    # voicing heard through a closure
                 bar=rng.uniform(0.3, 1.0), bar_hz=np.exp(rng.uniform(np.log(300), np.log(1500))),  # voice bar
                 burst=rng.uniform(0.5, 1.5), range=rng.uniform(0.5, 1.4))     # release bursts, pitch range

    # articulators: the lips (the very track the video shows, unclipped) and the tongue (formants)
    t_ms, mouth = lips(segs, n_samples / SR + hop / SR)
    at = np.clip(np.round(tc / 1e-3).astype(int), 0, len(t_ms) - 1)
    aperture, rounding = mouth[at, 0], np.clip(mouth[at, 2], 0, 1)
    fm = _spring(_targets(segs, t_ms, "formants"), 45.0, 1e-3)[at] * formant_scale    # (C, 3)
    seal = 1 - np.clip((aperture + 0.12) / 0.3, 0, 1) ** 0.7          # 1 where the lips meet, 0 above 0.18
    fm[:, 0] *= 1 - 0.55 * seal                                       # a closing jaw and lips lower F1 ...
    fm[:, 1] *= 1 - 0.25 * seal - 0.12 * rounding                     # ... and F2, rounding lowers F2, F3
    fm[:, 2] *= 1 - 0.1 * seal - 0.06 * rounding

    # how each source is on, per control frame
    tongue = np.isin(kind, ("stop", "affricate", "nasal")) & (place != "lab")    # the tongue closes the mouth
    closure = np.isin(kind, ("stop", "affricate")) & (pos < 0.999)
    oral = (1 - seal) * (1 - _smooth(tongue.astype(float), 3))        # what radiates from the mouth
    nasal = _smooth((kind == "nasal").astype(float), 4)               # the velum opens a little early, late
    v_amp = np.where(np.isin(kind, ("vowel", "approximant", "nasal", "laugh")), 1.0, 0.0)
    v_amp = np.where(np.isin(kind, ("fricative",)) & (voiced > 0), 0.5, v_amp)
    v_amp = np.where(kind == "approximant", 0.8, v_amp)
    bar = np.where(closure & (voiced > 0), 1.0, 0.0)                  # voiced closure: a low hum through the cheeks
    hiss = np.zeros(n_ctrl)
    hc, ho = np.full(n_ctrl, 3000.0), np.full(n_ctrl, 1.0)
    for pl, (c, o, lvl) in HISS.items():
        on = np.isin(kind, ("fricative",)) & (place == pl)
        hiss[on] = lvl * np.where(voiced[on] > 0, 0.5, 1.0)          # voiced fricatives hiss less
        hc[on], ho[on] = c, o
    breath = np.where(kind == "aspirate", 0.35, 0.0)                  # h: breath through the vowel's tract
    # stop releases: a burst at the segment's end, then aspiration (p t ch k) or voicing at once
    for i, (s, e, pid, lab, _) in enumerate(segs):
        p = PHONEMES[NAMES[pid]]
        if p.kind not in ("stop", "affricate"):
            continue
        after = tc - e
        c, o, lvl = BURST[p.place]
        lvl *= voice["burst"]
        burst = (after >= 0) & (after < 0.02)
        amp = lvl * np.exp(-np.clip(after, 0, None) / 0.005)
        take = burst & (amp > hiss)
        hiss[take], hc[take], ho[take] = amp[take], c, o
        if p.kind == "affricate":                                     # ch, jh: the release is a short sh
            fr = (after >= 0) & (after < 0.05)
            hiss[fr] = np.maximum(hiss[fr], 0.4)
            hc[fr], ho[fr] = HISS["post"][0], HISS["post"][1]
        if not p.voiced:
            vot = VOT[p.place] * (1.2 if stress[min(np.searchsorted(tc, e), n_ctrl - 1)] else 0.9)
            asp = (after >= 0) & (after < vot)
            breath[asp] = np.maximum(breath[asp], 0.3)
            v_amp[asp] *= np.clip(after[asp] / vot, 0, 1) ** 2       # voicing starts late
    # non-speech: laughs are breathy voiced "ha"s, sighs a falling breath, nose breaths a soft rush
    laugh = label == LAUGH
    pulse = 0.5 - 0.5 * np.cos(2 * np.pi * laugh_rate * (tc - start))
    v_amp[laugh] = 0.7 * pulse[laugh] ** 2
    breath[laugh] = 0.5 * pulse[laugh]
    sigh = kind == "sigh"
    env = np.minimum(1.0, pos / 0.2) * (1 - pos) ** 0.7
    breath[sigh] = 0.8 * env[sigh]
    hc[sigh], ho[sigh] = 2500 * (1 - 0.75 * pos[sigh]), 2.0
    nose = place == "nose"
    nose_breath = np.where(nose, np.sin(np.pi * np.clip(pos, 0, 1)) ** 2 * rng.uniform(0.04, 0.1), 0.0)
    oral[laugh | sigh] = 1.0

    # level: stress, arousal, and a little less at a phrase's end
    gain = loudness * (1 + 0.5 * arousal) * (1 + 0.35 * stress)
    v_amp, bar, hiss, breath = _smooth(v_amp, 2), _smooth(bar, 2), _smooth(hiss, 2), _smooth(breath, 2)

    # the glottal source at the sample rate: pitch with declination, accents, jitter; a Rosenberg-like
    # pulse whose derivative includes the lips' radiation; shimmer
    t = np.arange(n_samples) / SR
    phrase_f0 = _phrase_pitch(segs, t, rng) * voice["range"]
    ar = np.interp(t, tc, arousal)
    lab_laugh = np.interp(t, tc, laugh.astype(float))
    accent = np.interp(t, tc, _smooth(stress, 12))
    jitter = np.convolve(rng.standard_normal(n_samples), np.ones(80) / 80, mode="same") * voice["jitter"] * 9
    f0 = pitch * (1 + phrase_f0 + 0.12 * voice["range"] * accent + 0.15 * ar + 0.3 * lab_laugh) * (1 + jitter)
    phase = np.cumsum(f0 / SR) % 1.0
    oq, close = rng.uniform(0.5, 0.7), rng.uniform(0.08, 0.25)      # open quotient; closing phase (of it):
    rise = oq * (1 - close)                                          # a quicker closure is a brighter voice
    pulse = np.where(phase < rise, 0.5 - 0.5 * np.cos(np.pi * phase / rise),
                     np.where(phase < oq, np.cos(0.5 * np.pi * (phase - rise) / (oq - rise)), 0.0))
    cycle = np.floor(np.cumsum(f0 / SR))
    shimmer = 1 + voice["shimmer"] * np.random.default_rng(rng.integers(1 << 31)).standard_normal(int(cycle[-1]) + 2)
    source = np.diff(pulse, prepend=0.0) * 8 * shimmer[cycle.astype(int)]

    win = torch.hann_window(n_fft)
    stft = lambda x: torch.stft(torch.from_numpy(x).float(), n_fft, hop, window=win, return_complex=True)  # (F, C)
    freqs = torch.arange(n_fft // 2 + 1).float() * SR / n_fft
    T = lambda a: torch.from_numpy(np.asarray(a, np.float64)).float()
    fk = T(np.concatenate([fm, np.tile([3500.0, 4500.0], (n_ctrl, 1)) * formant_scale * voice["f45"]], 1))
    bw = torch.tensor([70.0, 100.0, 150.0, 200.0, 250.0]) * voice["bw"]
    tract = _resonances(freqs, fk, bw.expand_as(fk)).T                                   # (F, C)
    anti = T([ANTI.get(p, 1000.0) for p in place])
    # nasal murmur: a strong low resonance, a weaker, brighter part, the place's anti-resonance
    # nasal murmur: the nasal tract's own poles, the first strong, the others as bright as this voice's
    # (a weak murmur to one almost like a vowel), and the place's anti-resonance
    poles = torch.tensor([[250.0, 1000.0, 2100.0, 2900.0, 3700.0]]) * float(rng.uniform(0.9, 1.1))
    nose = _resonances(freqs, poles, torch.tensor([[100.0, 300.0, 400.0, 500.0, 600.0]]))[0]        # (F,)
    low = _resonances(freqs, poles[:, :1], torch.tensor([[100.0]]))[0]
    nose_tf = ((low + voice["nasal_hi"] * nose)[None] * _zero(freqs, anti, 150.0)).T * 1.5 * voice["nasal"]
    cheeks = (2 * voice["bar"] / torch.sqrt(1 + (freqs / voice["bar_hz"]) ** 4))[:, None]            # voice bar
    # an all-pole tract alone leaves F3-F5 20-40 dB below real voices (the glottal pulse's closure and
    # the higher poles are brighter): lift above 1 kHz by 2-15 dB per octave, a different voice each clip
    tilt = 10 ** (voice["presence"] * 6 * torch.log2(freqs / 1000).clamp(0, 3) / 20)[:, None]
    noise_band = _band(freqs, T(hc), T(ho)).T                                             # (F, C)
    white = lambda: rng.standard_normal(n_samples)
    g = lambda a: T(a * gain)[None]
    # the lift belongs to the mouth's sound; the nose and the cheeks damp high frequencies far more
    path = (tilt * tract * T(oral)[None] * (1 - 0.5 * T(nasal)[None]) + tilt ** 0.25 * nose_tf * T(nasal)[None]
            + (cheeks + voice["leak"] * tilt * tract) * T(bar)[None])
    spec = (stft(source) * path * g(np.maximum(v_amp, bar))
            + stft(white()) * tract * T(oral)[None] * tilt * g(breath + voice["breathy"] * v_amp) * 0.6
            + stft(white()) * noise_band * g(hiss)
            + stft(white()) * nose_tf * g(nose_breath))
    audio = torch.istft(spec[:, :n_ctrl], n_fft, hop, window=win, length=n_samples)
    audio = audio * 0.1 + 0.0003 * torch.from_numpy(white()).float()    # level, then a faint noise floor
    return torch.tanh(audio).float()                                       # soft limit into [-1, 1]


def _phrase_pitch(segs, t, rng):
    """Relative pitch change per sample: each phrase starts high, declines, and falls at its end."""
    out = np.zeros(len(t))
    start = None
    for k, (s, e, pid, lab, _) in enumerate(segs + [(t[-1] + 1, t[-1] + 1, ID["sil"], SILENCE, 0)]):
        speaking = lab == SPEECH
        if speaking and start is None:
            start = s
        if not speaking and start is not None:
            sel = (t >= start) & (t < s)
            x = (t[sel] - start) / max(s - start, 1e-3)
            top = rng.uniform(0.05, 0.15)
            out[sel] = top - 2 * top * x - 0.12 * np.clip((x - 0.8) / 0.2, 0, 1)
            start = None
    return out

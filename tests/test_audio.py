import math

import numpy as np
import pytest
import soundfile as sf
import torch

from flashsync import audio, augment
from flashsync.util import UserError


def reference_log_mel(x):
    """Independent float64 numpy log-mel following DESIGN.md §2 literally, loop by loop."""
    sr, hop, win, n_fft, n_mels = 16000, 160, 400, 512, 80
    n = math.ceil(len(x) / hop)
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / win) for i in range(win)])
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)
    lo, hi = mel(55.0), mel(7600.0)
    points = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if points[m] < f <= points[m + 1]:
                fb[m, k] = (f - points[m]) / (points[m + 1] - points[m])
            elif points[m + 1] < f < points[m + 2]:
                fb[m, k] = (points[m + 2] - f) / (points[m + 2] - points[m + 1])
    out = np.zeros((n, n_mels))
    for j in range(n):
        centre = hop * j + hop // 2                       # the middle of the frame's own 10 ms
        frame = np.zeros(win)
        for i in range(win):
            s = centre - win // 2 + i
            if 0 <= s < len(x):
                frame[i] = x[s]
        spec = np.fft.rfft(frame * window, n=n_fft)
        out[j] = np.log(np.maximum(fb @ (np.abs(spec) ** 2), 1e-5))
    return (out - audio.MEL_MEAN) / audio.MEL_STD


def speechlike(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def test_log_mel_matches_numpy_reference():
    x = speechlike(0.5)
    ours = audio.log_mel(torch.from_numpy(x)).numpy()
    ref = reference_log_mel(x.astype(np.float64))
    assert ours.shape == ref.shape == (50, 80)
    assert np.abs(ours - ref).max() < 1e-3


def test_streamed_in_40ms_pieces_equals_offline():
    x = torch.from_numpy(speechlike(3.03, seed=1))
    offline = audio.log_mel(x)
    stream = audio.LogMelStream()
    pieces = [stream.push(x[i:i + 640]) for i in range(0, len(x), 640)] + [stream.finish()]
    streamed = torch.cat(pieces)
    assert streamed.shape == offline.shape
    assert torch.allclose(streamed, offline, atol=1e-5)
    # pieces of odd sizes too
    stream = audio.LogMelStream()
    cuts = [0, 1, 7, 500, 1777, 1778, 30000, len(x)]
    odd = torch.cat([stream.push(x[a:b]) for a, b in zip(cuts, cuts[1:])] + [stream.finish()])
    assert torch.allclose(odd, offline, atol=1e-5)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 4000.0])
def test_pure_tone_lands_in_its_band(freq):
    t = torch.arange(16000) / 16000
    mel = audio.log_mel(0.5 * torch.sin(2 * math.pi * freq * t))
    fb = audio.mel_filterbank()
    centres = torch.arange(fb.shape[1]).float() * 16000 / 512
    peak_freq = (fb * centres).sum(1) / fb.sum(1)                     # centre of mass of each band
    expected = int((peak_freq - freq).abs().argmin())
    assert abs(int(mel[20:-20].mean(0).argmax()) - expected) <= 1


def test_ten_seconds_give_1000_mel_frames_and_250_windows():
    x = torch.zeros(160000)
    mel = audio.log_mel(x)
    assert mel.shape == (1000, 80)
    win = audio.mel_windows(mel)
    assert win.shape == (250, 20, 80)
    # the window of frame t is mel frames 4t-8 .. 4t+11; silence beyond the edges
    y = torch.from_numpy(speechlike(10.0, seed=2))
    m = audio.log_mel(y)
    w = audio.mel_windows(m)
    assert torch.equal(w[100], m[392:412])
    assert torch.all(w[0, :8] == audio.SILENCE) and torch.equal(w[0, 8:], m[:12])
    assert torch.allclose(audio.log_mel(torch.zeros(100))[0], torch.full((80,), audio.SILENCE))


def test_resample_keeps_frequency_and_length():
    for sr in (8000, 22050, 44100, 48000):
        t = np.arange(sr) / sr
        x = torch.from_numpy(np.sin(2 * np.pi * 440 * t)).float()
        y = audio.resample(x, sr, 16000)
        assert y.shape[0] == 16000
        spec = np.abs(np.fft.rfft(y[2000:14000].numpy()))
        assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 3
        assert abs(float(y[2000:14000].abs().max()) - 1.0) < 0.02


def test_load_any_rate_and_channels(tmp_path):
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 300 * t)], 1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 48000)
    sf.write(tmp_path / "s.flac", stereo, 48000)
    for name in ("s.wav", "s.flac"):
        x = audio.load_audio(str(tmp_path / name))
        assert x.dtype == torch.float32 and x.shape == (16000,)
        assert abs(float(x[1000:15000].abs().max()) - 0.375) < 0.01       # mean of the two channels


def test_load_audio_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        audio.load_audio(str(tmp_path / "missing.wav"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        audio.load_audio(str(tmp_path / "empty.wav"))
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match="zero length"):
        audio.load_audio(str(tmp_path / "zero.wav"))
    (tmp_path / "text.mp3").write_text("this is not audio\n" * 20)
    with pytest.raises(UserError, match="cannot read audio"):
        audio.load_audio(str(tmp_path / "text.mp3"))


def test_real_speech_loads(media):
    x = audio.load_audio(f"{media}/sun.wav")
    assert abs(len(x) / 16000 - 22.489) < 0.01
    mel = audio.log_mel(x)
    assert torch.isfinite(mel).all() and mel.std() > 0.3


def test_non_finite_samples_become_silence(tmp_path, capsys):
    x = (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    x[100:200] = np.nan
    x[5000] = -np.inf
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    y = audio.load_audio(str(tmp_path / "nan.wav"))
    assert torch.isfinite(y).all() and y[120:180].abs().max() < 1e-3
    assert "101 of 16000 samples are not numbers (NaN or inf); treated as silence" in capsys.readouterr().err


@pytest.mark.parametrize("kind", augment.KINDS)
def test_noise_floors_have_the_asked_level(kind):
    g = torch.Generator().manual_seed(0)
    speech = torch.zeros(48000)
    speech[1000] = 0.5                                         # the peak the level refers to
    noisy = augment.add_noise(speech, kind, -40.0, g) - speech
    level = noisy.pow(2).mean().sqrt() / 0.5
    if kind == "breath":                                       # breaths come and go: -40 dB while breathing
        env = noisy.abs().unfold(0, 1600, 1600).mean(1)
        assert env.max() > 4 * env.min()
        level = noisy.unfold(0, 1600, 1600).pow(2).mean(1).sqrt().max() / 0.5
        assert -43 < 20 * math.log10(level) < -35
    else:
        assert abs(20 * math.log10(level) + 40) < 0.5
    if kind == "hum":                                          # mains: 50 or 60 Hz and harmonics
        spec = torch.fft.rfft(noisy).abs()
        f = torch.fft.rfftfreq(len(noisy), 1 / 16000)
        assert f[spec.argmax()] in (50.0, 60.0, 100.0, 120.0, 150.0, 180.0)


def test_augment_is_a_plausible_recording():
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(np.stack([synth_speech(k) for k in range(4)]))
    y = augment.augment(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1
    assert not torch.allclose(y, x)
    assert torch.equal(y, augment.augment(x, torch.Generator().manual_seed(0)))   # reproducible
    # what was said is still there: the log-mel of each recording follows the clean one's loudness
    for a, b in zip(x, y):
        ea, eb = audio.log_mel(a).mean(1), audio.log_mel(b).mean(1)
        assert np.corrcoef(ea.numpy(), eb.numpy())[0, 1] > 0.6


def test_change_rate_moves_sound_and_tracks_together():
    # a 1.25x faster talker: a 400 Hz tone becomes 500 Hz, a closure at frames 10-14 lands at 8-11
    n = 25
    t = torch.arange(n * 640) / 16000
    tone = torch.sin(2 * math.pi * 400 * t)[None]                          # (1, N)
    track = torch.zeros(1, n, 1)
    track[0, 10:15] = 1.0                                                   # (1, L, 1)
    labels = torch.arange(n)[None]
    a, tr, lab = augment.change_rate(tone, track, labels, 1.25, 640)
    assert a.shape == (1, 20 * 640) and tr.shape == (1, 20, 1) and lab.shape == (1, 20)
    f = torch.fft.rfftfreq(a.shape[1], 1 / 16000)[torch.fft.rfft(a[0]).abs().argmax()]
    assert abs(float(f) - 500.0) < 2.0
    assert abs(float(a.pow(2).mean()) - float(tone.pow(2).mean())) < 0.01  # as loud
    on = torch.nonzero(tr[0, :, 0] > 0.5).flatten().tolist()
    assert on[0] in (8, 9) and on[-1] in (11, 12)
    assert lab[0, 0] == 0 and lab[0, -1] in (23, 24) and (lab[0, 1:] > lab[0, :-1]).all()
    # slower: more frames, lower voice
    a, tr, _ = augment.change_rate(tone, track, None, 0.8, 640)
    assert tr.shape[1] == 31 and a.shape[1] == 31 * 640
    f = torch.fft.rfftfreq(a.shape[1], 1 / 16000)[torch.fft.rfft(a[0]).abs().argmax()]
    assert abs(float(f) - 320.0) < 2.0


def synth_speech(k):
    from flashsync import synth
    return synth.make_clip(40 + k, 0, seconds=1.0, res=16, nsv=0.0)["audio"]

"""Audio: load anything to 16 kHz mono, resample, and the log-mel front end (DESIGN.md §2).

Timing convention. Video frame t owns samples [640t, 640t + 640). Mel frame j is
the 25 ms (400-sample) Hann window centred on sample 160j + 80, the middle of its
own 10 ms hop, so mel frames 4t..4t+3 sit symmetrically inside video frame t and
there are exactly 4 mel frames per video frame. Samples outside the signal are
zeros. The audio window of video frame t is the 20 mel frames 4t-8 .. 4t+11
(0.2 s), centred on the frame's centre; frames beyond the edges are the log-mel
of silence, i.e. exactly what zero-padding the audio would give.

Normalisation is a fixed affine map (MEL_MEAN, MEL_STD), never per-clip
statistics, so a streamed log-mel equals the offline one bit for bit.
"""
import math

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from flashsync import SR, SAMPLES_PER_FRAME
from flashsync.util import UserError, atomic_path, check_file, warn

N_FFT = 512
WIN = 400                      # 25 ms
HOP = 160                      # 10 ms -> 100 mel frames/s, 4 per video frame
N_MELS = 80
F_MIN, F_MAX = 55.0, 7600.0
LOG_FLOOR = 1e-5
MEL_WINDOW = 20                # mel frames per video-frame window (0.2 s)
MELS_PER_FRAME = SAMPLES_PER_FRAME // HOP  # 4
# Fixed normalisation: measured once on SynthTalk speech at its default loudness
# (mean and std of log-mel over many clips, speech and pauses together) and frozen.
MEL_MEAN, MEL_STD = -6.5, 4.2
_LEFT = WIN // 2 - HOP // 2    # 120: mel frame j starts at sample 160j - 120


# ----------------------------------------------------------------------------- loading

def resample(x, sr_in, sr_out=SR, zeros=16):
    """Windowed-sinc resampling of x (..., N) from sr_in to sr_out; returns (..., ceil(N*sr_out/sr_in)).

    Polyphase: with up/down = sr_out/sr_in in lowest terms, output sample n sits at
    input time n*down/up; each of the `up` phases is one FIR kernel applied with a
    stride of `down` (a single strided conv1d). The low-pass cutoff is just under the
    lower Nyquist rate; `zeros` sinc zero-crossings on each side.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if sr_in == sr_out:
        return x
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = sr_out // g, sr_in // g
    fc = 0.97 * min(1.0, up / down)                # cutoff as a fraction of the input Nyquist
    half = math.ceil(zeros / fc)                   # kernel half-width in input samples
    k = torch.arange(2 * half + down + 1, dtype=torch.float64)           # (K,)
    shift = torch.arange(up, dtype=torch.float64)[:, None] * down / up   # (up, 1) phase delays
    t = k[None, :] - half - shift                                        # (up, K) tap times
    window = torch.where(t.abs() <= half, torch.cos(math.pi * t / (2 * half)) ** 2, 0.0)
    kernel = (fc * torch.sinc(fc * t) * window).float()[:, None, :]      # (up, 1, K)
    shape, n = x.shape[:-1], x.shape[-1]
    n_out = math.ceil(n * up / down)
    n_blocks = math.ceil(n_out / up)
    xp = F.pad(x.reshape(-1, 1, n), (half, n_blocks * down + kernel.shape[-1] - n))
    y = F.conv1d(xp, kernel, stride=down)[..., :n_blocks]               # (B, up, blocks)
    y = y.transpose(1, 2).reshape(-1, n_blocks * up)[:, :n_out]
    return y.reshape(*shape, n_out)


def _read_av(path):
    """Decode the first audio stream of any file av opens -> (channels, N) float32 array, rate."""
    import av  # imported here: pure-wav users never pay for it
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise UserError(f"{path} has no audio stream (give a file with sound, e.g. --audio speech.wav)")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            to_float = av.AudioResampler(format="fltp")   # planar float, native rate and layout
            chunks = []
            for frame in container.decode(stream):
                for f in to_float.resample(frame):
                    chunks.append(f.to_ndarray())          # (C, n)
            for f in to_float.resample(None):
                chunks.append(f.to_ndarray())
            # codecs like AAC decode whole 1024-sample frames; the container knows the true length
            length = round(stream.duration * stream.time_base * rate) if stream.duration else None
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: cannot read audio ({e.strerror or e})") from None
    if not chunks:
        return np.zeros((1, 0), np.float32), rate
    return np.concatenate(chunks, axis=1)[:, :length], rate


def load_audio(path, sr=SR):
    """Any audio file (wav, flac, mp3, m4a, the sound of a video...) -> (N,) float32 tensor at `sr`, mono, in [-1, 1]."""
    check_file(path, "audio file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)   # (N, C)
        data = data.T
    except Exception:  # not a format libsndfile knows: let ffmpeg (through av) try
        data, rate = _read_av(path)
    if data.shape[1] == 0:
        raise UserError(f"{path}: audio has zero length (no samples)")
    data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    bad = ~torch.isfinite(data)
    if bad.any():                      # a broken float file: NaN or inf samples would poison every frame
        warn(f"{path}: {int(bad.sum())} of {data.numel()} samples are not numbers (NaN or inf); "
             f"treated as silence")
        data = torch.where(bad, 0.0, data)
    mono = data.mean(0)                                               # mix down: mean of channels
    audio = resample(mono, int(rate), sr).clamp(-1, 1)
    if audio.abs().max() < 1e-4:
        warn(f"{path}: audio is silent; the mouth will stay closed")
    return audio


def save_audio(path, audio, sr=SR):
    """Write mono float audio as 16-bit PCM wav, atomically."""
    audio = torch.as_tensor(audio).detach().float().clamp(-1, 1).cpu().numpy()
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")


def fit_length(audio, n):
    """Trim or zero-pad (N,) audio to exactly n samples."""
    if audio.shape[-1] >= n:
        return audio[..., :n]
    return F.pad(audio, (0, n - audio.shape[-1]))


# ----------------------------------------------------------------------------- log-mel

def hz_to_mel(f):
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels=N_MELS, n_fft=N_FFT, sr=SR, f_min=F_MIN, f_max=F_MAX):
    """Triangular filters, equally spaced on the HTK mel scale, peak 1 -> (n_mels, n_fft//2 + 1)."""
    edges = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0).float()


_FB = mel_filterbank()
_WINDOW = torch.hann_window(WIN, periodic=True)
SILENCE = (math.log(LOG_FLOOR) - MEL_MEAN) / MEL_STD   # the normalised log-mel of zeros


def _frames_to_logmel(frames):
    """(n, 400) windows of samples -> (n, 80) normalised log-mel."""
    spec = torch.fft.rfft(frames * _WINDOW, n=N_FFT)          # (n, 257)
    power = spec.real ** 2 + spec.imag ** 2
    mel = power @ _FB.T                                       # (n, 80)
    return (torch.log(torch.clamp(mel, min=LOG_FLOOR)) - MEL_MEAN) / MEL_STD


def log_mel(audio):
    """(N,) audio at 16 kHz -> (ceil(N/160), 80) normalised log-mel."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    n = math.ceil(audio.shape[-1] / HOP)
    padded = F.pad(audio, (_LEFT, HOP * (n - 1) + WIN - _LEFT - audio.shape[-1]))
    return _frames_to_logmel(padded.unfold(-1, WIN, HOP))


class LogMelStream:
    """The same log-mel, computed from audio that arrives in pieces of any size.

    push() returns every mel frame whose window is complete (each needs 120 samples
    of lookahead); finish() pads zeros and returns the rest, so the concatenation
    equals log_mel() of the whole signal.
    """

    def __init__(self):
        self.buf = torch.zeros(_LEFT)   # samples from the start of the next mel window on
        self.seen = 0                   # samples pushed so far
        self.done = 0                   # mel frames returned so far

    def push(self, chunk):
        chunk = torch.as_tensor(chunk, dtype=torch.float32).reshape(-1)
        self.buf = torch.cat([self.buf, chunk])
        self.seen += chunk.numel()
        k = max(0, (self.buf.numel() - WIN) // HOP + 1)
        if k == 0:
            return torch.empty(0, N_MELS)
        out = _frames_to_logmel(self.buf[:HOP * (k - 1) + WIN].unfold(-1, WIN, HOP))
        self.buf = self.buf[HOP * k:]
        self.done += k
        return out

    def finish(self):
        need = math.ceil(self.seen / HOP) - self.done
        if need <= 0:
            return torch.empty(0, N_MELS)
        self.buf = F.pad(self.buf, (0, HOP * (need - 1) + WIN - self.buf.numel()))
        return self.push(torch.empty(0))[:need]


def mel_windows(mel, n_frames=None):
    """(M, 80) log-mel -> (T, 20, 80): the 0.2 s window of each video frame, silence beyond the edges."""
    n_frames = math.ceil(mel.shape[0] / MELS_PER_FRAME) if n_frames is None else n_frames
    before = MEL_WINDOW // 2 - MELS_PER_FRAME // 2               # 8 frames before the video frame's first
    after = MELS_PER_FRAME * n_frames + MEL_WINDOW - before - MELS_PER_FRAME - mel.shape[0]
    padded = F.pad(mel.T, (before, max(after, 0)), value=SILENCE).T   # (8 + 4T + 8, 80)
    return padded.unfold(0, MEL_WINDOW, MELS_PER_FRAME)[:n_frames].transpose(1, 2)

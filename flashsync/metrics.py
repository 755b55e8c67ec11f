"""Metric functions on videos (DESIGN.md §5). Inputs are uint8 frames (T, R, R, 3) as numpy arrays
or tensors; regions are the fixed crop fractions of face.py. The sync-expert metrics (LSE-D,
LSE-C, LipScore, offsets) live in syncnet.py; eval.py runs them all over SynthTalk."""
import numpy as np
import torch

from flashsync import FPS, face, synth
from flashsync.autoencoder import ssim as _ssim
from flashsync.nn import to_float


def _f(x):
    if isinstance(x, torch.Tensor):
        return x.float().clone()
    return torch.from_numpy(np.array(x, dtype=np.float32))        # a copy: inputs may be read-only memmaps


def psnr(a, b, mask=None):
    """Mean over frames of the per-frame PSNR (dB, peak 255) of a vs b, over the pixels where
    mask (R, R) or (T, R, R) is true; frames whose mask is empty are skipped. Identical: inf."""
    a, b = _f(a), _f(b)
    sq = (a - b).pow(2).mean(-1)                                     # (T, R, R)
    m = torch.ones_like(sq) if mask is None else _f(mask).expand_as(sq)
    n = m.flatten(1).sum(1)
    keep = n > 0
    if not keep.any():
        return float("nan")
    mse = (sq * m).flatten(1).sum(1)[keep] / n[keep]
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())      # inf where mse is 0


def region_psnr(a, b, frac, inside=True):
    """PSNR inside (or outside) a face.py region such as face.MOUTH or face.LOWER_FACE."""
    m = face.region_mask(frac, np.asarray(a).shape[-2])
    return psnr(a, b, m if inside else 1 - m)


def ssim(a, b):
    """Mean SSIM of two videos (1 for identical)."""
    return float(_ssim(to_float(torch.from_numpy(np.array(a))), to_float(torch.from_numpy(np.array(b)))).mean())


def pearson(x, y):
    """Pearson correlation of two sequences (nan when either is constant)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def opening(frames):
    """The analytic reader's mouth opening of each frame -> (T,)."""
    return np.asarray(synth.read_mouth(np.asarray(frames))["open"])


def lipleak(frames):
    """Fraction of frames whose mouth reads open (for outputs driven by silence: lower is better)."""
    return float((opening(frames) > synth.OPEN_THRESHOLD).mean())


def flicker(out, src):
    """Mean absolute frame-to-frame change outside the mouth box of `out`, divided by the source's (1: as steady)."""
    keep = 1 - face.region_mask(face.MOUTH, np.asarray(out).shape[-2])[..., None]      # (R, R, 1)
    change = lambda v: float(((_f(v)[1:] - _f(v)[:-1]).abs() * keep).mean())
    return change(out) / max(change(src), 1e-6)


# ----------------------------------------------------------------------------- real speech (DESIGN.md §5)
# English sentences with phoneme start times (../shared/media/speech): does the mouth close on
# p, b, m, open on open vowels and stay shut in pauses? Names are espeak-style mnemonics.

BILABIALS = ("p", "b", "m")
OPEN_VOWELS = ("a", "aa", "a#", "A:", "A@", "aI", "aU", "V", "0", "O:", "O", "O2", "O@", "e@", "E", "E2", "a2",
               "aI@", "aI3")
CLOSED_BELOW, OPEN_ABOVE = 0.15, 0.30      # reader opening thresholds
PAUSE_DB, PAUSE_GAP = -35.0, 3             # a pause frame: >= 3 frames from any frame louder than -35 dB re peak
LAST_PHONEME = 0.1                         # seconds the last phoneme of a file lasts


def phoneme_spans(phonemes, seconds=None):
    """[[name, start s], ...] -> [(name, start, end)]: each lasts until the next starts, the last 0.1 s."""
    starts = [float(s) for _, s in phonemes]
    ends = starts[1:] + [starts[-1] + LAST_PHONEME] if starts else []
    return [(str(name), s, e) for (name, _), s, e in zip(phonemes, starts, ends)]


def frame_levels(audio):
    """RMS of each 40 ms frame of 16 kHz audio (N,) in dB relative to the peak sample -> (ceil(N/640),)."""
    x = torch.as_tensor(audio, dtype=torch.float64).reshape(-1)
    n = -(-x.numel() // 640)
    frames = torch.nn.functional.pad(x, (0, n * 640 - x.numel())).reshape(n, 640)
    peak = x.abs().max().clamp(min=1e-12)
    return (20 * torch.log10(frames.pow(2).mean(1).sqrt().clamp(min=1e-12) / peak)).numpy()


def pause_frames(audio, n=None):
    """(T,) bool: frames at least 3 frames away from every frame louder than -35 dB re the file's peak."""
    db = frame_levels(audio)
    n = len(db) if n is None else n
    loud = np.zeros(n + 2 * PAUSE_GAP, bool)
    idx = np.nonzero(db[:n] > PAUSE_DB)[0]
    for k in range(-PAUSE_GAP + 1, PAUSE_GAP):
        loud[idx + k + PAUSE_GAP] = True
    return ~loud[PAUSE_GAP:PAUSE_GAP + n]


def speech_marks(openings, spans, pauses):
    """Closure, opening and pause-open of a reader track `openings` (T,) on one file.

    closure:    fraction of bilabials (p, b, m) whose mouth drops below 0.15 in some frame from
                one frame before the phoneme's start to one frame after its end (40 ms frames)
    opening:    fraction of open vowels whose mouth exceeds 0.30 in the same span
    pause_open: fraction of pause frames (`pauses`, (T,) bool) whose mouth reads open (> 0.15)
    Returns a dict with the three rates (nan where a file has none) and their counts.
    """
    o = np.asarray(openings)
    t_max = len(o) - 1
    closed, opened = [], []
    for name, start, end in spans:
        if name not in BILABIALS and name not in OPEN_VOWELS:
            continue
        first = int(np.floor(start * FPS)) - 1
        last = int(np.ceil(end * FPS)) - 1 + 1          # the frame holding the end, then one more
        lo, hi = max(first, 0), min(last, t_max)
        if hi < lo:
            continue
        if name in BILABIALS:
            closed.append(o[lo:hi + 1].min() < CLOSED_BELOW)
        else:
            opened.append(o[lo:hi + 1].max() > OPEN_ABOVE)
    p = np.asarray(pauses, bool)[:len(o)]
    rate = lambda v: float(np.mean(v)) if len(v) else float("nan")
    return dict(closure=rate(closed), opening=rate(opened), pause_open=rate(o[:len(p)][p] > synth.OPEN_THRESHOLD),
                bilabials=len(closed), open_vowels=len(opened), pause_frames=int(p.sum()))


# ----------------------------------------------------------------------------- paste-back (DESIGN.md §5)

def _box_masks(boxes, shape, grow=0.0):
    """(T, 4) boxes x, y, w, h in pixels, each grown by `grow` of its size per side -> (T, H, W) bool."""
    b = torch.as_tensor(np.asarray(boxes, np.float32))
    x0, y0 = b[:, 0] - grow * b[:, 2], b[:, 1] - grow * b[:, 3]
    x1, y1 = b[:, 0] + (1 + grow) * b[:, 2], b[:, 1] + (1 + grow) * b[:, 3]
    ys, xs = torch.arange(shape[0]) + 0.5, torch.arange(shape[1]) + 0.5
    inside_y = (ys[None] >= y0[:, None]) & (ys[None] < y1[:, None])          # (T, H)
    inside_x = (xs[None] >= x0[:, None]) & (xs[None] < x1[:, None])          # (T, W)
    return inside_y[:, :, None] & inside_x[:, None, :]


def sharpness(frames, mask):
    """Mean gradient magnitude of the luminance inside mask (T, H, W) -> float."""
    f = _f(frames)
    lum = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114          # (T, H, W)
    gx = torch.nn.functional.pad(lum[:, :, 1:] - lum[:, :, :-1], (0, 1))
    gy = torch.nn.functional.pad(lum[:, 1:] - lum[:, :-1], (0, 0, 0, 1))
    m = torch.as_tensor(mask).float()
    return float(((gx * gx + gy * gy).sqrt() * m).sum() / m.sum().clamp(min=1))


def paste_quality(out, src, lower_boxes, mouth_boxes, grow=0.125):
    """How well a lip-sync edit was pasted back into full frames (T, H, W, 3), against the source:

    outside_mouth_db  PSNR of the lower face outside the mouth box grown by a quarter (`grow` of its
                      size on each side): there the output should be the source, up to the codec
    sharpness         mean gradient magnitude in the lower face, output / source (1: as sharp)
    """
    shape = np.asarray(out).shape[1:3]
    lower = _box_masks(lower_boxes, shape)
    keep = lower & ~_box_masks(mouth_boxes, shape, grow)
    return dict(outside_mouth_db=psnr(out, src, keep), sharpness=sharpness(out, lower) / sharpness(src, lower))

"""Metric functions on videos (DESIGN.md §5). Inputs are uint8 frames (T, R, R, 3) as numpy arrays
or tensors; regions are the fixed crop fractions of face.py. The sync-expert metrics (LSE-D,
LSE-C, LipScore, offsets) live in syncnet.py; eval.py runs them all over SynthTalk."""
import numpy as np
import torch

from flashsync import face, synth
from flashsync.autoencoder import ssim as _ssim
from flashsync.nn import to_float


def _f(x):
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

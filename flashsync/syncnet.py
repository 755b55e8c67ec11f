"""The project's own lip-sync expert (DESIGN.md §4, §5), in the spirit of SyncNet and Wav2Lip's expert.

A visual tower embeds 5 consecutive lower-face crops (frames t-2 .. t+2), an audio
tower embeds the 0.2 s log-mel window of frame t (20 x 80); both unit-normalised.
Training: for a frame t, the audio windows of frames t + o for o in -15 .. 15 are
scored with p = sigmoid(w * cos + b); BCE with o = 0 as the positive and every
shifted window, and the in-sync window of another clip, as negatives (positives
weighted to balance), so the expert learns where sync peaks, not just speech.

Metrics over a clip (SyncNet's definitions, with distances between unit vectors):
  d(o)   = mean over frames t of || v_t - a_{t+o} ||, o in -15 .. 15
  LSE-D  = min_o d(o)                    (lower is better)
  LSE-C  = median_o d(o) - min_o d(o)    (confidence, higher is better)
  offset = argmin_o d(o): how many frames the audio lags the video (+) or leads it (-)
"""
import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync import SAMPLES_PER_FRAME, face
from flashsync.audio import MEL_WINDOW, N_MELS, log_mel, mel_windows
from flashsync.nn import norm, to_float

CONTEXT = 2            # frames each side of the centre: 5 frames in
MAX_OFFSET = 15


@dataclasses.dataclass
class SyncConfig:
    dim: int = 128
    width: int = 16                # channels of the first conv; doubled twice
    max_offset: int = MAX_OFFSET
    crop: tuple = (32, 64)         # lower-face crop size (h, w) the visual tower sees


def _tower(cin, w, dim, flat):
    """Four 3x3 convs (three of stride 2), then a linear map of the flattened features to `dim`."""
    return nn.Sequential(
        nn.Conv2d(cin, w, 3, padding=1), norm(w), nn.SiLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), norm(2 * w), nn.SiLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), norm(4 * w), nn.SiLU(),
        nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), norm(4 * w), nn.SiLU(),
        nn.Flatten(), nn.Linear(flat, dim))


class SyncNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        w, (h, wd) = cfg.width, cfg.crop
        self.visual = _tower(3 * (2 * CONTEXT + 1), w, cfg.dim, 4 * w * (h // 8) * (wd // 8))
        self.audio = _tower(1, w, cfg.dim, 4 * w * -(-MEL_WINDOW // 8) * (N_MELS // 8))
        self.scale = nn.Parameter(torch.tensor(5.0))          # p = sigmoid(scale * cos + bias)
        self.bias = nn.Parameter(torch.tensor(-2.0))

    def embed_visual(self, frames):
        """uint8 (B, 5, R, R, 3) -> unit vectors (B, dim), from the lower face of each frame."""
        res = frames.shape[-2]
        x0, y0, x1, y1 = face.region(face.LOWER_FACE, res)
        x = to_float(frames[:, :, y0:y1, x0:x1]).flatten(1, 2)                 # (B, 15, h, w)
        x = F.interpolate(x, size=self.cfg.crop, mode="bilinear", antialias=True, align_corners=False)
        return F.normalize(self.visual(x), dim=-1)

    def embed_audio(self, windows):
        """Log-mel windows (B, 20, 80) -> unit vectors (B, dim)."""
        return F.normalize(self.audio(windows[:, None]), dim=-1)

    def loss(self, batch):
        """batch: video (B, L, R, R, 3) and audio (B, L * 640) with L = 5 + 2 * max_offset.

        The 2m + 1 audio windows around the centre frame c are scored against the visual
        windows of frames c - 2 .. c + 2, each with its own in-sync window as the positive."""
        video, audio = batch["video"], batch["audio"]
        b, n = video.shape[:2]
        m = self.cfg.max_offset
        c = n // 2                                                            # centre frame
        k = 2 * CONTEXT + 1
        idx = torch.arange(c - CONTEXT, c + CONTEXT + 1)[:, None] + torch.arange(-CONTEXT, CONTEXT + 1)[None]
        v = self.embed_visual(video[:, idx].flatten(0, 1)).unflatten(0, (b, k))              # (B, 5, D)
        mels = torch.stack([mel_windows(log_mel(a), n) for a in audio])                    # (B, L, 20, 80)
        a = self.embed_audio(mels[:, c - m:c + m + 1].flatten(0, 1)).unflatten(0, (b, 2 * m + 1))  # (B, 2m+1, D)
        cos = torch.einsum("bkd,bod->bko", v, a)                              # (B, 5, 2m+1): every offset
        other = torch.einsum("bkd,bkd->bk", v, a[:, m - CONTEXT:m + CONTEXT + 1].roll(1, 0))[..., None]
        logits = self.scale * torch.cat([cos, other], -1) + self.bias        # other: another clip's speech
        target = torch.zeros_like(logits)
        pos = m + torch.arange(-CONTEXT, CONTEXT + 1)                         # frame c + j in sync at m + j
        target[:, torch.arange(k), pos] = 1
        weight = 1 + target * (logits.shape[-1] - 2)                          # positives balance negatives
        loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight) * 2 / logits.shape[-1]
        acc = (cos.argmax(-1) == pos).float().mean()                          # offset found exactly
        return loss, dict(offset_acc=acc.detach())

    forward = loss


# ----------------------------------------------------------------------------- metrics

@torch.no_grad()
def embed_frames(net, frames, batch=256):
    """Visual embedding of every frame of a clip: uint8 (T, R, R, 3) -> (T, D); the window of frame t
    is frames t-2 .. t+2, the edge frames repeated at the clip's ends."""
    frames = torch.tensor(np.asarray(frames))             # a copy: clips are often read-only memmaps
    t = frames.shape[0]
    idx = (torch.arange(t)[:, None] + torch.arange(-CONTEXT, CONTEXT + 1)[None]).clamp(0, t - 1)   # (T, 5)
    return torch.cat([net.embed_visual(frames[idx[i:i + batch]]) for i in range(0, t, batch)])


@torch.no_grad()
def embed_speech(net, audio, t, batch=256):
    """Audio embedding of each of t frames: 16 kHz audio (any length, silence past its end) -> (t, D)."""
    mels = mel_windows(log_mel(torch.as_tensor(audio, dtype=torch.float32)[:t * 640]), t)
    return torch.cat([net.embed_audio(mels[i:i + batch]) for i in range(0, t, batch)])


def offset_distances(v, a, max_offset=MAX_OFFSET):
    """d(o) = mean_t || v_t - a_{t+o} || over the frames where t + o is inside the clip -> (2m+1,)."""
    t = v.shape[0]
    out = []
    for o in range(-max_offset, max_offset + 1):
        lo, hi = max(0, -o), min(t, t - o)
        out.append((v[lo:hi] - a[lo + o:hi + o]).norm(dim=-1).mean() if hi > lo else torch.tensor(float("inf")))
    return torch.stack(out)


def lse(net, frames, audio, max_offset=MAX_OFFSET):
    """LSE-D, LSE-C and the audio offset (frames, + = audio late) of one clip, as a dict of floats."""
    d = offset_distances(embed_frames(net, frames), embed_speech(net, audio, len(frames)), max_offset)
    best = int(d.argmin())
    return dict(lse_d=float(d[best]), lse_c=float(d.median() - d[best]), offset=best - max_offset)


@torch.no_grad()
def lipscore(net, frames, reference):
    """Mean cosine similarity of the expert's visual embeddings of two videos of the same length."""
    return float((embed_frames(net, frames) * embed_frames(net, reference)).sum(-1).mean())


def shift_audio(audio, k):
    """Audio delayed by k frames (k < 0: advanced), zeros where nothing is left: (N,) -> (N,)."""
    audio = np.asarray(audio)
    out = np.zeros_like(audio)
    s = k * SAMPLES_PER_FRAME
    if s >= 0:
        out[s:] = audio[:len(audio) - s]
    else:
        out[:s] = audio[-s:]
    return out

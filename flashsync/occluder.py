"""The occlusion segmenter: which pixels of a face crop are covered by something in front of the face.

KeySync asks the user to click the occluder for SAM2; here, when no mask file is given, a small
UNet trained on SynthTalk's ground-truth occluder masks (hands, microphones passing in front of
the lower face) predicts them. (B, 3, R, R) -> (B, R, R) logits, binary cross-entropy.
"""
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync.nn import Down, ResBlock, Up, to_float


@dataclasses.dataclass
class SegmenterConfig:
    resolution: int = 64
    channels: tuple = (16, 32, 64)     # widths at R/stem, R/(2 stem), R/(4 stem)
    stem: int = 1                      # pixel-unshuffle the crop by this first, and shuffle the logits back:
                                       # 2 is 4x less work (600 steps: 5.2 -> 1.5 min on 2 AVX2 cores)
    relight: bool = True               # train on relit, recoloured, mirrored crops (see `relight`)


class Segmenter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        c0, c1, c2 = cfg.channels
        self.inp = nn.Conv2d(3 * cfg.stem ** 2, c0, 3, padding=1)
        self.e0, self.d0 = ResBlock(c0), Down(c0, c1)
        self.e1, self.d1 = ResBlock(c1), Down(c1, c2)
        self.mid = nn.Sequential(ResBlock(c2), ResBlock(c2))
        self.u1, self.m1 = Up(c2, c1), ResBlock(2 * c1, c1)
        self.u0, self.m0 = Up(c1, c0), ResBlock(2 * c0, c0)
        self.out = nn.Conv2d(c0, cfg.stem ** 2, 1)

    def logits(self, x):
        """(B, 3, R, R) in [-1, 1] -> (B, R, R)."""
        s0 = self.e0(self.inp(F.pixel_unshuffle(x, self.cfg.stem)))                  # (B, c0, R/stem, R/stem)
        s1 = self.e1(self.d0(s0))
        h = self.mid(self.d1(s1))
        h = self.m1(torch.cat([self.u1(h), s1], 1))
        h = self.m0(torch.cat([self.u0(h), s0], 1))
        return F.pixel_shuffle(self.out(h), self.cfg.stem)[:, 0]

    def loss(self, batch):
        truth = batch["occluder"][:, 0].float()                       # (B, R, R): the target frame's mask
        x = to_float(batch["target"])                                  # (B, 3, R, R)
        if self.training and self.cfg.relight:
            x, truth = relight(x, truth)
        logits = self.logits(x)
        # occluders cover few of SynthTalk's pixels: plain BCE learned "never" (IoU 0). A soft IoU over the
        # batch weighs the occluder's pixels as much as all the rest (and train.py draws half the
        # targets from frames that show one).
        p = torch.sigmoid(logits)
        soft_iou = (p * truth).sum() / (p + truth - p * truth).sum().clamp(min=1)
        pred = logits.detach() > 0
        iou = (pred & (truth > 0)).sum() / (pred | (truth > 0)).sum().clamp(min=1)
        return F.binary_cross_entropy_with_logits(logits, truth) + (1 - soft_iou), dict(iou=iou)

    forward = loss

    @torch.no_grad()
    def masks(self, crops):
        """uint8 crops (B, R, R, 3) -> bool occluder masks (B, R, R)."""
        return self.logits(to_float(torch.as_tensor(crops))) > 0


def relight(x, truth):
    """Training crops (B, 3, R, R) in [-1, 1] and masks (B, R, R) -> the same faces under other light.

    SynthTalk's hands are flat skin-coloured shapes on an evenly lit face, so "a darker patch of skin
    in the lower face" was enough to find them, and on real footage the shadow under a jaw or a mouth
    corner read as a hand. Here half the crops get a smooth random shading field (0.65x to 1.2x), a
    soft-edged cast shadow (in half of those), per-channel colour gains, a gamma and a little sensor
    noise (relighting all of them lost thin microphone handles: IoU 0.79 against 0.86), and any crop
    may be mirrored: what tells an occluder is its outline. Masks only mirror: light changes no label.
    """
    B, _, R, _ = x.shape
    rand = lambda *shape: torch.rand(*shape, device=x.device)
    img = (x + 1) / 2
    field = F.interpolate(rand(B, 1, 3, 3), size=R, mode="bicubic", align_corners=True)   # (B, 1, R, R)
    shade = 0.65 + 0.55 * field.clamp(0, 1)
    g = torch.linspace(-1, 1, R, device=x.device)
    angle = rand(B, 1, 1) * 2 * math.pi
    d = torch.cos(angle) * g[None, None, :] + torch.sin(angle) * g[None, :, None] - (rand(B, 1, 1) * 1.2 - 0.6)
    cast = torch.sigmoid(d / (0.02 + 0.1 * rand(B, 1, 1))) * (rand(B, 1, 1) < 0.5)          # (B, R, R)
    shade = shade * (1 - (0.15 + 0.35 * rand(B, 1, 1, 1)) * cast[:, None])
    gains = 0.8 + 0.4 * rand(B, 3, 1, 1)
    img = (img * shade * gains).clamp(0, 1) ** (0.7 + 0.6 * rand(B, 1, 1, 1))
    img = img + 0.02 * rand(B, 1, 1, 1) * torch.randn_like(img)
    keep = rand(B, 1, 1, 1) < 0.5                                   # half the crops as they were
    img = torch.where(keep, (x + 1) / 2, img)
    flip = rand(B) < 0.5
    img = torch.where(flip[:, None, None, None], img.flip(-1), img)
    truth = torch.where(flip[:, None, None], truth.flip(-1), truth)
    return img.clamp(0, 1) * 2 - 1, truth


def iou(pred, truth):
    """Intersection over union of two bool mask stacks, over all their pixels (1 when both are empty)."""
    pred, truth = torch.as_tensor(pred).bool(), torch.as_tensor(truth).bool()
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union

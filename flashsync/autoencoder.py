"""Latent autoencoder shared by every latent model (DESIGN.md §4).

A small ldm-style conv encoder/decoder: (B, 3, R, R) in [-1, 1] <-> (B, 4, R/f, R/f).
f = 4 at 64-128 px so the mouth spans several latent cells, f = 8 from 256 px
(the papers' setting). `stem` > 1 starts with a pixel unshuffle (space-to-depth): the
first level then runs at R/stem with stem^2 * 3 input channels, so no convolution
touches the full-resolution image; the decoder ends with the matching pixel
shuffle. On a CPU that is where the time goes: at 64 px, stem 2 with channels
(32, 64) trains 1.5x faster than stem 1 with (16, 32, 64) (208 vs 314 ms a step of
16 on 2 cores) with as many weights. Deterministic (no KL): the loss is L1 + a structural
(SSIM) term, plus a tiny L2 pull on the latent so its scale stays near 1 for the
latent models that follow. Frozen after its own training.
"""
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync import face
from flashsync.nn import Down, ResBlock, Up, box_mean, norm, to_float
from flashsync.util import UserError


@dataclasses.dataclass
class AEConfig:
    resolution: int = 64
    factor: int = 4                    # spatial downsampling: 4 at 64-128 px, 8 from 256 px
    channels: tuple = (32, 64, 64)     # per level, the stem's resolution first; len = log2(factor / stem) + 1
    stem: int = 1                      # pixel-unshuffle factor before the first conv (1: none)
    latent: int = 4
    ssim_weight: float = 0.2
    latent_weight: float = 1e-4
    mouth_weight: float = 0.0          # extra L1 on the mouth box: every later model is judged on the mouth
    crop: int = 0                      # train on random crop x crop windows (half of them holding the mouth box)
                                       # instead of whole frames: at 256 px, 128 is ~4x cheaper a step (0: off)


class Autoencoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        s = cfg.stem
        if s * 2 ** (len(ch) - 1) != cfg.factor:
            raise UserError(f"--ae_channels={ch} has {len(ch)} levels, but factor {cfg.factor} with ae_stem {s} "
                            f"needs log2(factor / stem) + 1 = {math.log2(cfg.factor / s) + 1:g}")
        enc = [nn.PixelUnshuffle(s)] if s > 1 else []                       # (B, 3s^2, R/s, R/s)
        enc.append(nn.Conv2d(3 * s * s, ch[0], 3, padding=1))
        for i, c in enumerate(ch):
            enc.append(ResBlock(c))
            if i + 1 < len(ch):
                enc.append(Down(c, ch[i + 1]))
        enc += [ResBlock(ch[-1]), norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(cfg.latent, ch[-1], 3, padding=1), ResBlock(ch[-1])]
        for i in reversed(range(len(ch))):
            dec.append(ResBlock(ch[i]))
            if i > 0:
                dec.append(Up(ch[i], ch[i - 1]))
        dec += [norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3 * s * s, 3, padding=1)] + ([nn.PixelShuffle(s)] if s > 1 else [])
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        """(B, 3, R, R) in [-1, 1] -> (B, 4, R/f, R/f)."""
        return self.encoder(x)

    def decode(self, z):
        """(B, 4, R/f, R/f) -> (B, 3, R, R), not clamped (clamp when turning into pixels)."""
        return self.decoder(z)

    def crops(self, x):
        """Random (B, 3, c, c) windows of (B, 3, R, R) frames on the latent grid (the network is
        convolutional, so it learns the same map), and each window's mouth-box mask (B, 1, c, c). Half
        the windows are placed to hold the mouth box, the rest anywhere."""
        r, c, f = x.shape[-1], self.cfg.crop, self.cfg.factor
        x0, y0, x1, y1 = face.region(face.MOUTH, r)
        box = torch.zeros(1, 1, r, r, device=x.device)
        box[..., y0:y1, x0:x1] = 1
        anywhere = torch.randint(0, (r - c) // f + 1, (len(x), 2)) * f
        lo = torch.tensor([x1 - c, y1 - c]).clamp(min=0)            # left, top of windows that hold the box
        hi = torch.tensor([x0, y0]).clamp(max=r - c)
        near = (lo + torch.rand(len(x), 2) * (hi - lo).clamp(min=0)).long() // f * f
        pick = (torch.rand(len(x), 1) < 0.5)
        at = torch.where(pick, near, anywhere).tolist()                          # (B, 2): left, top
        win = lambda t, i: t[..., at[i][1]:at[i][1] + c, at[i][0]:at[i][0] + c]
        return (torch.stack([win(x[i], i) for i in range(len(x))]),
                torch.stack([win(box[0], i) for i in range(len(x))]))

    def loss(self, batch):
        x = to_float(batch["target"])                      # (B, 3, R, R)
        c = self.cfg
        if self.training and 0 < c.crop < x.shape[-1]:
            x, box = self.crops(x)                         # (B, 3, crop, crop), (B, 1, crop, crop)
        else:
            x0, y0, x1, y1 = face.region(face.MOUTH, x.shape[-1])
            box = torch.zeros_like(x[:, :1])
            box[..., y0:y1, x0:x1] = 1
        z = self.encode(x)
        y = self.decode(z)
        e = (y - x).abs()
        l1 = e.mean()
        # the mouth box's pixels once more: a plain L1 blurs the small dark interior of a half-open
        # mouth away, and then no editor can draw it (the mouth reader on reconstructions: r 0.78
        # with the truth at mouth_weight 0, see the README)
        mouth = (e * box).sum() / (3 * box.sum()).clamp(min=1)
        s = 1 - ssim(y, x).mean()
        loss = l1 + c.mouth_weight * mouth + c.ssim_weight * s + c.latent_weight * z.pow(2).mean()
        return loss, dict(l1=l1.detach(), mouth=mouth.detach(), ssim=1 - s.detach(), y=y.detach())

    forward = loss


def ssim(x, y, window=7):
    """Mean-filtered SSIM per image for inputs in [-1, 1]: (B, 3, H, W) x2 -> (B,)."""
    x, y = (x + 1) / 2, (y + 1) / 2
    mx, my, xx, yy, xy = box_mean(torch.cat([x, y, x * x, y * y, x * y], 1), window).chunk(5, 1)   # one pass for all five
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def psnr(x, y):
    """PSNR in dB of images in [-1, 1]: (B, 3, H, W) x2 -> (B,)."""
    mse = ((x.clamp(-1, 1) - y.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))

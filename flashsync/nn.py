"""Small building blocks shared by every model: norm, residual block, down/up sampling, sinusoids."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm(c):
    """GroupNorm with up to 8 groups (works for any channel count >= 1)."""
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    """GN-SiLU-conv twice with a skip; an optional 1x1 conv when channels change. (B, cin, H, W) -> (B, cout, H, W)"""

    def __init__(self, cin, cout=None):
        super().__init__()
        cout = cout or cin
        self.body = nn.Sequential(norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Down(nn.Module):
    """Stride-2 conv: (B, cin, H, W) -> (B, cout, H/2, W/2)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Up(nn.Module):
    """Nearest upsampling then a conv: (B, cin, H, W) -> (B, cout, 2H, 2W)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def box_mean(t, window):
    """Mean over window x window neighbourhoods of (..., H, W) (zero padding, divided by the pixels inside
    the image), by cumulative sums: the same cost for any window, several times faster than avg_pool2d
    on a CPU."""
    r = window // 2

    def along(t, dim):
        c = F.pad(t.transpose(dim, -1), (r + 1, r)).cumsum(-1)
        return (c[..., 2 * r + 1:] - c[..., :-2 * r - 1]).transpose(dim, -1)

    ones = torch.ones(1, 1, *t.shape[-2:], dtype=t.dtype, device=t.device)
    return along(along(t, -1), -2) / along(along(ones, -1), -2)


def to_float(video):
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return video.movedim(-1, -3).float() / 127.5 - 1


def to_uint8(x):
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def sinusoid(x, dim):
    """Sinusoidal embedding of any real values (...,) -> (..., dim): sines then cosines of x at
    frequencies 10000^(-k / (dim/2)) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device) / half)
    angles = x[..., None].float() * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)

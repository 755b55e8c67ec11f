"""FlashLips stage 1: the one-step latent editor driven by a 12-D lips-pose vector (DESIGN.md §4).

    z_out = z_in + UNet(cat(z_in, mask, f_ref(z_ref_1..K), tile(p)))        (residual edit)

z_in is the latent of the target frame with its lower face blanked (masked
editor) or of the whole frame (mask-free editor after self-refinement); the K
reference latents come from other frames of the same video and carry the
identity's mouth appearance; p is the lips-pose vector, which alone says what
shape the mouth should take. The lips encoder reads p from the mouth region of
the target frame through a hard bottleneck (unit-norm direction + noise in
training), so it can carry mouth shape but hardly identity. Training is only
reconstruction: L1 on the latent, extra L1 inside the mask, L1 in pixels on the
lower face and, heavily weighted, on the lips, through the frozen decoder.

Mask-free self-refinement: with the masked editor frozen, make mouth-altered
variants mod = E(src | p_other) and fine-tune a copy without the mask on the
symmetric pairs (src -> mod given p_other) and (mod -> src given p_src).
"""
import copy
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync import face
from flashsync.nn import Down, ResBlock, Up, norm, to_float


@dataclasses.dataclass
class EditorConfig:
    resolution: int = 64
    latent: int = 4
    refs: int = 4                  # K reference frames
    ref_channels: int = 8          # f_ref output channels per reference
    lips_dim: int = 12
    lips_noise: float = 0.2        # bottleneck noise (training only), relative to the unit-norm vector's scale
    channels: tuple = (64, 128)    # UNet widths at latent resolution and half of it
    w_mask: float = 2.0            # extra latent L1 inside the mask
    w_pixel: float = 1.0           # pixel L1 on the lower face
    w_lips: float = 5.0            # pixel L1 on the mouth box


class LipsEncoder(nn.Module):
    """Mouth region of (B, 3, R, R) frames -> (B, 12) lips-pose vectors with norm sqrt(12)."""

    def __init__(self, dim=12, noise=0.2):
        super().__init__()
        self.noise = noise
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),     # (B, 64, 8, 16)
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),     # (B, 64, 4, 8)
            nn.Flatten(), nn.Linear(64 * 4 * 8, 128), nn.SiLU(), nn.Linear(128, dim))

    def forward(self, x):
        res = x.shape[-1]
        x0, y0, x1, y1 = face.region(face.MOUTH, res)
        mouth = F.interpolate(x[..., y0:y1, x0:x1], size=(16, 32), mode="bilinear", align_corners=False)
        p = F.normalize(self.net(mouth), dim=-1) * math.sqrt(self.net[-1].out_features)
        if self.training and self.noise > 0:
            p = p + self.noise * torch.randn_like(p)
        return p


class EditorNet(nn.Module):
    """The residual UNet over latents plus f_ref. Returns z_in + delta, (B, 4, h, w)."""

    def __init__(self, cfg):
        super().__init__()
        c0, c1 = cfg.channels
        self.f_ref = nn.Sequential(nn.Conv2d(cfg.latent, 32, 3, padding=1), nn.SiLU(),
                                   nn.Conv2d(32, cfg.ref_channels, 3, padding=1))
        cin = cfg.latent + 1 + cfg.refs * cfg.ref_channels + cfg.lips_dim
        self.inp = nn.Conv2d(cin, c0, 3, padding=1)
        self.enc0 = ResBlock(c0)
        self.down = Down(c0, c1)
        self.mid = nn.Sequential(ResBlock(c1), ResBlock(c1))
        self.up = Up(c1, c0)
        self.dec0 = ResBlock(2 * c0, c0)
        self.out = nn.Sequential(norm(c0), nn.SiLU(), nn.Conv2d(c0, cfg.latent, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)     # starts as the identity: z_out = z_in
        nn.init.zeros_(self.out[-1].bias)

    def ref_features(self, z_refs):
        """f_ref of each reference latent, stacked: (B, K, 4, h, w) -> (B, K*ref_channels, h, w).
        Fixed for a whole video, so inference computes it once."""
        b, k, c, h, w = z_refs.shape
        return self.f_ref(z_refs.flatten(0, 1)).reshape(b, -1, h, w)

    def forward(self, z_in, mask, z_refs, p, refs=None):
        """z_in (B, 4, h, w), mask (B, 1, h, w), z_refs (B, K, 4, h, w), p (B, 12) -> (B, 4, h, w).
        refs: ref_features(z_refs), when already computed (then z_refs is not used)."""
        refs = self.ref_features(z_refs) if refs is None else refs
        h, w = z_in.shape[-2:]
        x = torch.cat([z_in, mask, refs.expand(len(z_in), -1, -1, -1), p[:, :, None, None].expand(-1, -1, h, w)], 1)
        skip = self.enc0(self.inp(x))
        x = self.dec0(torch.cat([self.up(self.mid(self.down(skip))), skip], 1))
        return z_in + self.out(x)


class Editor(nn.Module):
    """The masked editor, trained by self-reconstruction. `ae` is a frozen Autoencoder."""

    def __init__(self, cfg, ae):
        super().__init__()
        self.cfg = cfg
        self.ae = ae.requires_grad_(False).eval()
        self.lips = LipsEncoder(cfg.lips_dim, cfg.lips_noise)
        self.net = EditorNet(cfg)
        r = cfg.resolution
        self.register_buffer("pix_mask", face.region_mask(face.LOWER_FACE, r)[None, None], persistent=False)
        self.register_buffer("lips_mask", face.region_mask(face.MOUTH, r)[None, None], persistent=False)
        f = ae.cfg.factor
        lat = face.region_mask(face.LOWER_FACE, r)[None, None]
        # a latent cell is masked when any of its pixels is: nothing of the mouth leaks through
        self.register_buffer("lat_mask", F.max_pool2d(lat, f), persistent=False)

    def train(self, mode=True):
        super().train(mode)
        self.ae.eval()        # frozen, always
        return self

    def encode(self, crops):
        """uint8 crops (N, R, R, 3) -> their latents (N, 4, h, w) (what train.py caches once per dataset)."""
        return self.ae.encode(to_float(crops))

    def encode_inputs(self, target, refs, masked=True, z_refs=None, z_target=None):
        """uint8 target (B, R, R, 3) and refs (B / g, K, R, R, 3) -> z_in, mask, z_refs (B, K, 4, h, w), target
        float. Each reference set may serve g consecutive targets (FrameSampler's groups): encoded once.
        z_refs (B / g, K, 4, h, w), z_target (B, 4, h, w): their latents, when already known (a cache)."""
        x = to_float(target)                                               # (B, 3, R, R)
        with torch.no_grad():
            if z_refs is None:
                z_refs = self.ae.encode(to_float(refs).flatten(0, 1)).unflatten(0, refs.shape[:2])
            z_refs = z_refs.repeat_interleave(len(x) // len(z_refs), 0)
            z_in, mask = self.encode_target(x, masked, z_target)
        return z_in, mask, z_refs, x

    def encode_target(self, x, masked=True, z=None):
        """Float frames (B, 3, R, R) -> the input latent (B, 4, h, w) and mask channel (B, 1, h, w).
        z: the unmasked frames' latents, when already known."""
        if masked:
            z_in = self.ae.encode(x * (1 - self.pix_mask))                     # lower face blanked to grey
            return z_in, self.lat_mask.expand(len(x), -1, -1, -1)
        z_in = self.ae.encode(x) if z is None else z
        return z_in, torch.zeros_like(z_in[:, :1])

    def edit(self, target, refs, p, masked=True):
        """Edit uint8 frames with lips vectors p (B, 12) -> output latent (B, 4, h, w)."""
        z_in, mask, z_refs, _ = self.encode_inputs(target, refs, masked)
        return self.net(z_in, mask, z_refs, p)

    def recon_loss(self, z_out, z_target, y_target):
        """The reconstruction loss of DESIGN.md §4 for an output latent vs a target latent and target pixels."""
        d = (z_out - z_target).abs()
        lat = d.mean()
        lat_mask = (d * self.lat_mask).sum() / (self.lat_mask.sum() * d.shape[0] * d.shape[1])
        y = self.ae.decode(z_out)
        e = (y - y_target).abs()
        pix = (e * self.pix_mask).sum() / (self.pix_mask.sum() * e.shape[0] * 3)
        lips = (e * self.lips_mask).sum() / (self.lips_mask.sum() * e.shape[0] * 3)
        c = self.cfg
        loss = lat + c.w_mask * lat_mask + c.w_pixel * pix + c.w_lips * lips
        return loss, dict(latent=lat.detach(), pixel=pix.detach(), lips=lips.detach(), y=y.detach())

    def loss(self, batch):
        """batch: target (B, R, R, 3), refs (B / g, K, R, R, 3) uint8, and optionally their latents
        target_features, refs_features (train.py computes every frame's latent once)."""
        z_in, mask, z_refs, x = self.encode_inputs(batch["target"], batch["refs"], True, batch.get("refs_features"))
        with torch.no_grad():
            z_target = batch.get("target_features")
            z_target = self.ae.encode(x) if z_target is None else z_target
        p = self.lips(x)
        z_out = self.net(z_in, mask, z_refs, p)
        return self.recon_loss(z_out, z_target, x)

    forward = loss


class Refiner(nn.Module):
    """Mask-free self-refinement: a trainable copy of a trained masked editor, fed whole frames."""

    def __init__(self, editor):
        super().__init__()
        self.teacher = editor.requires_grad_(False).eval()
        self.net = copy.deepcopy(editor.net).requires_grad_(True)     # starts from the masked editor

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def cfg(self):
        return self.teacher.cfg

    @property
    def ae(self):
        return self.teacher.ae

    def encode(self, crops):
        return self.teacher.encode(crops)

    def edit(self, target, refs, p):
        """Mask-free edit of uint8 frames -> output latent (B, 4, h, w)."""
        z_in, mask, z_refs, _ = self.teacher.encode_inputs(target, refs, masked=False)
        return self.net(z_in, mask, z_refs, p)

    def loss(self, batch):
        t = self.teacher
        z_src, zero, z_refs, x = t.encode_inputs(batch["target"], batch["refs"], False, batch.get("refs_features"),
                                                 batch.get("target_features"))
        with torch.no_grad():
            p_src = t.lips(x)
            p_other = t.lips(to_float(batch["other"]))
            z_in, mask = t.encode_target(x, masked=True)
            z_mod = t.net(z_in, mask, z_refs, p_other)                                  # mouth moved to `other`
            y_mod = t.ae.decode(z_mod)
        # symmetric pairs: src -> mod given p_other, and mod -> src given p_src
        la, sa = t.recon_loss(self.net(z_src, zero, z_refs, p_other), z_mod, y_mod)
        lb, sb = t.recon_loss(self.net(z_mod, zero, z_refs, p_src), z_src, x)
        return (la + lb) / 2, dict(latent=(sa["latent"] + sb["latent"]) / 2, lips=(sa["lips"] + sb["lips"]) / 2,
                                   y=sa["y"])

    forward = loss

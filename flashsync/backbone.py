"""The spatio-temporal latent backbone of the diffusion models (KeySync, KeyFace; DESIGN.md §4).

A two-level UNet over every frame's latent (space: 2-D residual blocks), with temporal
self-attention after each block (time: each latent cell attends to itself in the other
frames of the window), and the audio of each frame entering twice, as KeySync does:
added to the noise-level embedding (a per-frame scale and shift of every block) and by
cross-attention of the low-resolution cells to the audio features around that frame.

    x       (B, T, C_x, h, w)   c_in-scaled noisy latents, channel-concatenated with the conditions
    c_noise (B,)                EDM's noise-level input
    audio   (B, T, W, A)        each frame's window of W per-frame audio features
    keep    (B,) bool           False: this sample's audio is replaced by a learned null (guidance)
    extra   (B, T, E) or None   more per-frame embeddings added to the noise embedding (KeyFace: emotion)
    pos     (T,)                the frames' positions in video frames (keyframes are S apart)
    -> F    (B, T, C_out, h, w)
"""
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync.audio import log_mel
from flashsync.nn import Down, Up, norm, sinusoid, to_float


@dataclasses.dataclass
class BackboneConfig:
    inputs: int = 9                # channels in: noisy latent + conditions
    outputs: int = 4               # channels out: the latent
    channels: tuple = (64, 128)    # widths at latent resolution and half of it
    emb: int = 256                 # noise-level / per-frame embedding width
    audio_dim: int = 128           # per-frame audio feature width
    heads: int = 4


class EmbBlock(nn.Module):
    """Residual block whose second norm is scaled and shifted by the frame's embedding.
    (N, cin, h, w), (N, E) -> (N, cout, h, w)"""

    def __init__(self, cin, cout, emb):
        super().__init__()
        self.n1, self.c1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2, self.c2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(F.silu(e))[:, :, None, None].chunk(2, 1)
        h = self.c2(F.silu(self.n2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class Attention(nn.Module):
    """Pre-norm multi-head attention of queries (N, L, C) to context (N, M, D) (self-attention if None),
    added back; the output projection starts at zero so a new block starts as the identity."""

    def __init__(self, dim, heads, context=None):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, context=None):
        n, length, c = x.shape
        h = self.norm(x)
        ctx = h if context is None else context
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)      # (N, heads, L, C / heads)
        k, v = self.kv(ctx).chunk(2, -1)
        out = F.scaled_dot_product_attention(split(self.q(h)), split(k), split(v))
        return x + self.proj(out.transpose(1, 2).reshape(n, length, c))


class Temporal(nn.Module):
    """Self-attention over the T frames at every latent cell, with sinusoidal frame positions.
    (B*T, C, h, w) -> (B*T, C, h, w)"""

    def __init__(self, dim, heads):
        super().__init__()
        self.attn = Attention(dim, heads)

    def forward(self, x, t, pos):
        bt, c, h, w = x.shape
        seq = x.unflatten(0, (-1, t)).permute(0, 3, 4, 1, 2).reshape(-1, t, c)    # (B*h*w, T, C)
        seq = self.attn(seq + sinusoid(pos, c).to(seq.dtype))
        return seq.reshape(-1, h, w, t, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.channels
        e = cfg.emb
        self.noise = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.audio_emb = nn.Linear(cfg.audio_dim, e)
        self.null = nn.Parameter(torch.zeros(cfg.audio_dim))          # the audio features of "no audio"
        self.inp = nn.Conv2d(cfg.inputs, c0, 3, padding=1)
        self.enc, self.enc_t = EmbBlock(c0, c0, e), Temporal(c0, cfg.heads)
        self.down = Down(c0, c1)
        self.mid1, self.mid1_t = EmbBlock(c1, c1, e), Temporal(c1, cfg.heads)
        self.cross = Attention(c1, cfg.heads, cfg.audio_dim)
        self.mid2, self.mid2_t = EmbBlock(c1, c1, e), Temporal(c1, cfg.heads)
        self.up = Up(c1, c0)
        self.dec, self.dec_t = EmbBlock(2 * c0, c0, e), Temporal(c0, cfg.heads)
        self.out = nn.Sequential(norm(c0), nn.SiLU(), nn.Conv2d(c0, cfg.outputs, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, c_noise, audio, keep, pos, extra=None):
        b, t, _, h, w = x.shape
        audio = torch.where(keep[:, None, None, None], audio, self.null.to(audio.dtype))    # (B, T, W, A)
        e = self.noise(sinusoid(c_noise * 250, self.cfg.emb))[:, None]                    # (B, 1, E)
        # the frame's own audio feature, not the window's mean: a mean blurs the mouth over +-W/2 frames
        # (+-80 ms, about a phoneme); KeySync's r_driving with the mean: 0.74, the centre: see the README
        wlen = audio.shape[2]
        e = e + self.audio_emb(audio[:, :, wlen // 2])                                      # (B, T, E)
        if extra is not None:
            e = e + extra
        e = e.flatten(0, 1)                                                                 # (B*T, E)
        # the window's features with their offsets from the frame, so attention knows which one is now
        offsets = sinusoid(torch.arange(wlen, device=x.device) - wlen // 2, audio.shape[-1]).to(audio.dtype)
        ctx = (audio + offsets).flatten(0, 1)                                               # (B*T, W, A)
        x = self.inp(x.flatten(0, 1))                                                       # (B*T, c0, h, w)
        skip = self.enc_t(self.enc(x, e), t, pos)
        x = self.mid1_t(self.mid1(self.down(skip), e), t, pos)                              # (B*T, c1, h/2, w/2)
        cells = x.flatten(2).transpose(1, 2)                                                # (B*T, hw/4, c1)
        x = self.cross(cells, ctx).transpose(1, 2).reshape(x.shape)
        x = self.mid2_t(self.mid2(x, e), t, pos)
        x = self.dec_t(self.dec(torch.cat([self.up(x), skip], 1), e), t, pos)
        return self.out(x).unflatten(0, (b, t))                                            # (B, T, C_out, h, w)


class PoseFeatures(nn.Module):
    """Per-frame audio features that also say the mouth's shape: the FlashLips pose model's audio
    encoder features (B, L, D) and, beside them, the lips poses its flow samples from that audio
    (B, L, 12, normalised) -> (B, L, D + 12). Log-mel (B, 4L, 80) in, like AudioEncoder.

    The diffusion models then condition on what FlashLips' editor is driven by, which a small
    diffusion model trained for 1500 CPU steps could not get from the features alone (KeySync's
    keyframes: r_driving 0.81 from the features). The flow starts from zero rather than noise, so
    the poses are one deterministic function of the audio (a window's poses do not depend on a
    seed), with no reference poses (the speaker's style comes from the reference latent) and the
    pose model's audio guidance."""

    def __init__(self, flow, steps=6, guidance=3.0, lips=None):
        super().__init__()
        self.flow, self.steps = flow, steps
        self.guidance = guidance if flow.cfg.audio_drop > 0 else 1.0
        self.lips = lips            # the editor's lips encoder (frozen), when training on the frames' own poses

    def true_poses(self, x):
        """Frames (N, 3, R, R) in [-1, 1] -> their own lips poses, normalised as the sampled ones (N, 12)."""
        return (self.lips(x) - self.flow.mean) / self.flow.std

    def forward(self, mel):
        f = self.flow
        n = -(-mel.shape[1] // 4)
        refs = f.mean.expand(mel.shape[0], f.cfg.refs, -1)                   # (B, K, 12): normalised zeros
        noise = torch.zeros(mel.shape[0], n, f.cfg.lips_dim, device=mel.device)
        poses = f.sample(mel, refs, n, self.steps, noise=noise, guidance=self.guidance)
        return torch.cat([f.features(mel), (poses - f.mean) / f.std], -1)    # (B, L, D + 12)


class LatentVideoModel(nn.Module):
    """What KeySync's and KeyFace's models share around their Backbone: the demo's autoencoder and the
    FlashLips pose model's audio encoder, both frozen (why that encoder: keysync.py's docstring)."""

    def __init__(self, ae, audio):
        super().__init__()
        self.ae = ae.requires_grad_(False).eval()
        self.audio = audio.requires_grad_(False).eval()

    def train(self, mode=True):
        super().train(mode)
        self.ae.eval()
        self.audio.eval()
        return self

    @torch.no_grad()
    def encode(self, crops):
        """uint8 crops (N, R, R, 3) -> latents (N, 4, h, w)."""
        return self.ae.encode(to_float(crops))

    @torch.no_grad()
    def features(self, audio):
        """16 kHz audio (B, L * 640) -> per-frame audio features (B, L, A), full context."""
        return self.audio(log_mel(audio))[:, :audio.shape[-1] // 640]

    @torch.no_grad()
    def train_features(self, audio, video, p_true=0.0, noise=0.0):
        """Training's audio features of windows whose uint8 frames are video (B, L, R, R, 3) (None with
        p_true 0): `features`, but in a fraction p_true of the windows the lips poses beside them are the
        frames' own (the lips encoder on the frames) plus Gaussian noise: a clean signal of the mouth's
        shape to learn to follow, where the flow's samples are right only on average; sampling still
        draws them from the audio, as FlashLips' editor, trained on true poses, is driven by sampled ones.
        The frames themselves, not their latents decoded: the decoder was 97 of a keyframe step's 760 ms."""
        f = self.features(audio)
        if p_true <= 0 or getattr(self.audio, "lips", None) is None:
            return f
        pick = torch.rand(f.shape[0], device=f.device) < p_true                    # (B,) the windows to change
        if not pick.any():
            return f
        frames = to_float(video[pick])                                             # (P, L, 3, R, R)
        true = self.audio.true_poses(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])   # (P, L, 12)
        f[pick, :, -true.shape[-1]:] = (true + noise * torch.randn_like(true)).to(f.dtype)
        return f

"""FlashLips stage 2: audio -> lips-pose sequence by rectified-flow matching (DESIGN.md §4).

    x_t = (1 - t) * eps + t * x_1,   target velocity v = x_1 - eps,   t ~ logit-normal
    loss = || v_theta(x_t, t | audio, reference poses) - (x_1 - eps) ||^2

x_1 is the sequence of (normalised) 12-D lips vectors of a clip, (B, T, 12).
The audio encoder turns the log-mel (4 frames per video frame) into one feature
per video frame with strided convolutions and a transformer. The flow
transformer sees, per frame, x_t + audio feature + the flow time embedding, and
K reference poses of the speaker as extra tokens (style). Attention is limited
to the past plus a lookahead; training draws the lookahead at random so one
model serves offline (full context) and streaming (a few frames ahead). Position
convolutions are causal; the strided mel convolutions see about 1.5 frames
ahead, so the true lookahead is the attention's plus ~2 frames.
Sampling: a few Euler steps from Gaussian noise.

Classifier-free guidance on the audio: training replaces a window's audio features by a
learned null vector now and then (`audio_drop`), so the same network also learns how
lips move with no audio at all; sampling extrapolates from that towards the audio,
    v = v(x | no audio) + s * (v(x | audio) - v(x | no audio)),
which, for s > 1, makes closures closed and open vowels open rather than hedged
(as talking-head diffusion models guide on audio).
"""
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync import SAMPLES_PER_FRAME
from flashsync.audio import log_mel
from flashsync.augment import augment, change_rate, mask_bands
from flashsync.nn import sinusoid, to_float


@dataclasses.dataclass
class PoseConfig:
    dim: int = 128
    heads: int = 4
    audio_layers: int = 2
    flow_layers: int = 4
    lips_dim: int = 12
    refs: int = 4                  # K reference poses (speaker style)
    n_mels: int = 80
    max_lookahead: int = 8         # frames; training draws 0..max or full context
    full_context_prob: float = 0.5
    augment: bool = True           # train on random recordings of the audio (level, noise, room; augment.py)
    phonemes: int = 0              # > 0: an auxiliary head names each frame's phoneme from the audio features
    phoneme_weight: float = 0.3    # weight of its cross-entropy, where the data knows the phonemes (SynthTalk)
    audio_drop: float = 0.0        # chance a training window sees no audio (for classifier-free guidance)
    rate: float = 1.0              # > 1: each training batch spoken 1/rate .. rate times as fast (augment.change_rate)


def timestep_embedding(t, dim):
    """Sinusoidal embedding of flow times t (B,) in [0, 1] -> (B, dim)."""
    return sinusoid(1000.0 * t, dim)


def lookahead_mask(t_len, lookahead, extra=0, device=None):
    """Boolean (T + extra, T + extra) attention mask, True = may attend.

    Frame i sees frames j <= i + lookahead (lookahead < 0: everything); the first
    `extra` tokens (reference poses) are seen by all and see all.
    """
    n = t_len + extra
    i = torch.arange(n, device=device)
    ok = (i[None, :] - extra) <= (i[:, None] - extra) + (lookahead if lookahead >= 0 else n)
    ok[:, :extra] = True
    ok[:extra, :] = True
    return ok


class Block(nn.Module):
    """Pre-norm transformer block: attention (with a mask) and an MLP. (B, N, D) -> (B, N, D)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, mask=None):
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.n2(x))


class CausalConv(nn.Module):
    """Depthwise conv over time that only looks back (so lookahead comes from attention alone). (B, C, T)."""

    def __init__(self, c, k):
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(c, c, k, groups=c)

    def forward(self, x):
        return self.conv(F.pad(x, (self.k - 1, 0)))


class AudioEncoder(nn.Module):
    """Log-mel (B, 4T, 80) -> per-video-frame features (B, T, dim): two stride-2 convs (100 -> 25 Hz), transformer."""

    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(cfg.n_mels, cfg.dim, 5, stride=2, padding=2), nn.GELU(),
                                  nn.Conv1d(cfg.dim, cfg.dim, 5, stride=2, padding=2), nn.GELU())
        self.pos = CausalConv(cfg.dim, 9)                                          # relative position
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads) for _ in range(cfg.audio_layers))

    def forward(self, mel, mask=None):
        h = self.conv(mel.transpose(1, 2))                 # (B, dim, T)
        h = (h + self.pos(h)).transpose(1, 2)              # (B, T, dim)
        for blk in self.blocks:
            h = blk(h, mask)
        return h


class PoseFlow(nn.Module):
    """Velocity field v(x_t, t | audio, reference poses) over a sequence, and its sampler."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.audio = AudioEncoder(cfg)
        self.inp = nn.Linear(cfg.lips_dim, d)
        self.ref = nn.Linear(cfg.lips_dim, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = CausalConv(d, 9)
        self.blocks = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.flow_layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.lips_dim))
        self.phone = nn.Linear(d, cfg.phonemes) if cfg.phonemes else None
        self.null = nn.Parameter(torch.zeros(d))            # the audio features of "no audio"
        # pose normalisation (lips-encoder statistics), stored with the weights
        self.register_buffer("mean", torch.zeros(cfg.lips_dim))
        self.register_buffer("std", torch.ones(cfg.lips_dim))

    def features(self, mel, lookahead=-1):
        """Per-frame audio features (B, ceil(M / 4), dim) of log-mel (B, M, 80), each seeing `lookahead` frames ahead."""
        return self.audio(mel, lookahead_mask(-(-mel.shape[1] // 4), lookahead, 0, mel.device))

    def velocity(self, x, t, mel, refs, lookahead=-1, audio=None):
        """x (B, T, 12) normalised, t (B,), mel (B, >= 4T, 80), refs (B, K, 12) normalised -> (B, T, 12).
        audio: features(mel, lookahead), when already computed.

        Mel beyond frame T (say, what a stream has already heard) only reaches the last
        frames through the convolutions and, with full context, through attention."""
        b, n, _ = x.shape
        k = refs.shape[1]
        a = self.features(mel, lookahead) if audio is None else audio
        h = self.inp(x) + a[:, :n] + self.time(timestep_embedding(t, self.cfg.dim))[:, None]
        h = h + self.pos(h.transpose(1, 2)).transpose(1, 2)
        h = torch.cat([self.ref(refs), h], 1)              # (B, K + T, dim)
        mask = lookahead_mask(n, lookahead, k, x.device)
        for blk in self.blocks:
            h = blk(h, mask)
        return self.out(h[:, k:])

    def loss(self, poses, mel, refs, generator=None, phoneme=None):
        """Rectified-flow loss. poses (B, T, 12) and refs (B, K, 12) raw lips vectors; mel (B, 4T, 80);
        phoneme (B, T) ids (-1: unknown) for the auxiliary head. -> (loss, flow loss, phoneme loss)"""
        x1, r = (poses - self.mean) / self.std, (refs - self.mean) / self.std
        b = x1.shape[0]
        eps = torch.randn(x1.shape, generator=generator, device=x1.device)
        t = torch.sigmoid(torch.randn(b, generator=generator, device=x1.device))   # logit-normal
        xt = (1 - t[:, None, None]) * eps + t[:, None, None] * x1
        cfg = self.cfg
        full = torch.rand((), generator=generator) < cfg.full_context_prob
        lookahead = -1 if full else int(torch.randint(cfg.max_lookahead + 1, (), generator=generator))
        a = self.features(mel, lookahead)
        drop = torch.rand(b, 1, 1, generator=generator, device=x1.device) < cfg.audio_drop
        heard = torch.where(drop, self.null.to(a.dtype), a)
        flow = F.mse_loss(self.velocity(xt, t, mel, r, lookahead, heard), x1 - eps)
        aux = torch.zeros((), device=flow.device)
        if self.phone is not None and phoneme is not None and (phoneme >= 0).any():
            # naming the sounds frame by frame keeps the audio features phonetic, not tied to one voice
            aux = F.cross_entropy(self.phone(a[:, :phoneme.shape[1]]).flatten(0, 1), phoneme.flatten(), ignore_index=-1)
        return flow + cfg.phoneme_weight * aux, flow.detach(), aux.detach()

    @torch.no_grad()
    def sample(self, mel, refs, n_frames, steps=6, lookahead=-1, generator=None, noise=None, guidance=1.0):
        """Lips vectors (B, T, 12) for log-mel (B, >= 4T, 80) and reference poses (B, K, 12), raw scale.
        noise: the starting point (B, T, 12), drawn from `generator` when not given; guidance: the audio
        guidance scale s (1: none; the no-audio branch runs in the same batch)."""
        b = mel.shape[0]
        x0 = noise if noise is not None else torch.randn(b, n_frames, self.cfg.lips_dim, generator=generator,
                                                         device=mel.device)
        r = (refs - self.mean) / self.std
        a = self.features(mel, lookahead)
        if guidance == 1.0:
            v = lambda x, t: self.velocity(x, t.expand(b), mel, r, lookahead, a)
        else:
            both, r2 = torch.cat([a, self.null.to(a.dtype).expand_as(a)]), torch.cat([r, r])
            def v(x, t):
                heard, silent = self.velocity(torch.cat([x, x]), t.expand(2 * b), mel, r2, lookahead, both).chunk(2)
                return silent + guidance * (heard - silent)
        return euler(v, x0, steps) * self.std + self.mean


class PoseModel(nn.Module):
    """Training wrapper: lips vectors from the frozen stage-1 lips encoder are the flow's targets."""

    def __init__(self, cfg, lips):
        super().__init__()
        self.lips = lips.requires_grad_(False).eval()
        self.flow = PoseFlow(cfg)
        self.register_buffer("ready", torch.zeros(()))     # pose statistics set from the first batch

    def train(self, mode=True):
        super().train(mode)
        self.lips.eval()
        return self

    @torch.no_grad()
    def poses(self, video):
        """uint8 (B, L, R, R, 3) -> lips vectors (B, L, 12)."""
        return self.lips(to_float(video).flatten(0, 1)).unflatten(0, video.shape[:2])

    def loss(self, batch):
        if "video_features" in batch:                          # lips vectors computed once (FrameSampler features)
            poses, refs = batch["video_features"], batch["refs_features"]
        else:
            poses, refs = self.poses(batch["video"]), self.poses(batch["refs"])
        if not self.ready:
            flat = poses.flatten(0, 1)
            self.flow.mean.copy_(flat.mean(0))
            self.flow.std.copy_(flat.std(0).clamp(min=1e-3))
            self.ready.fill_(1)
        audio, phoneme = batch["audio"], batch.get("phoneme")  # (B, L * 640), (B, L)
        rate = self.flow.cfg.rate
        if self.training and rate > 1:                         # a faster or slower talker (the refs, a style, stay)
            r = rate ** (2 * float(torch.rand(())) - 1)
            audio, poses, phoneme = change_rate(audio, poses, phoneme, r, SAMPLES_PER_FRAME)
        if self.training and self.flow.cfg.augment:
            audio = augment(audio)                             # what a real microphone would have heard
        mel = log_mel(audio)                                   # (B, 4L, 80)
        if self.training and self.flow.cfg.augment:
            mel = mask_bands(mel)
        loss, flow, aux = self.flow.loss(poses, mel, refs, phoneme=phoneme)
        return loss, dict(flow=flow, phoneme=aux)

    forward = loss


def euler(velocity, x0, steps):
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 in `steps` equal Euler steps."""
    x = x0
    for i in range(steps):
        t = torch.full((1,), i / steps, device=x0.device)
        x = x + velocity(x, t) / steps
    return x

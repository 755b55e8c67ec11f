"""KeySync (Bigata et al. 2025): keyframe + interpolation latent video diffusion for lip-sync (DESIGN.md §4).

Two models on the shared core (diffusion.py) and backbone (backbone.py), both trained by
self-reconstruction on videos whose lower face is hidden:

  keyframe model       T keyframes S frames apart: the mouth shapes, from the audio
  interpolation model  the S - 1 frames between two generated keyframes, given both
                       (a known-frame channel says which frames are given)

The source video conditions by replacement: outside the edit mask the noisy latent is
the clean source latent, before and after every network call, so nothing outside the
mask can change. Edit mask = lower-face box (face.LOWER_FACE, the nose line down) AND
NOT occluder: a hand or microphone in front of the mouth stays the source's. The
network also sees, channel-concatenated, the masked source latent unscaled (at high σ
c_in shrinks the replaced input to almost nothing), the mask, the reference latent (a
frame of the same video away from the window: identity, teeth, lip colour) and the
known-frame channel:

    input (B, T, 14, h, w) = [c_in x | source * (1 - mask) | mask | reference | known]

Audio: the per-frame features of the FlashLips pose model's audio encoder, frozen. It
was trained (pose.py) to tell lip shapes from speech, on augmented recordings and with a
phoneme head, which is what this model needs from audio and what a small diffusion
model could not learn from scratch in a CPU budget; the sync expert's audio tower was
trained only to tell in-sync from shifted, which says less about the shape. Each frame
cross-attends to the W features around it.

Long videos (`Dubber`): windows of T keyframes over the whole input, consecutive windows
sharing their boundary keyframe (given to the next window as a known frame), then the
interpolation model between every keyframe pair; only one window of frames is held.
"""
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from flashsync import diffusion, face
from flashsync.audio import log_mel
from flashsync.backbone import Backbone, BackboneConfig, LatentVideoModel
from flashsync.lipsync import mel_span
from flashsync.nn import to_uint8


@dataclasses.dataclass
class KeySyncConfig:
    resolution: int = 64
    latent: int = 4
    interp: bool = False           # False: the keyframe model; True: the interpolation model
    frames: int = 8                # T keyframes per window (the paper: 14)
    stride: int = 4                # S: frames from one keyframe to the next (the interpolation fills S - 1)
    channels: tuple = (64, 128)
    audio_dim: int = 128
    audio_window: int = 5          # W audio frames each frame's cross-attention sees, centred on it
    p_all: float = 0.1             # condition dropout: no reference and no audio
    p_audio: float = 0.2           # the reference but no audio
    p_first: float = 0.3           # keyframe model: the window's first keyframe is given (a window continuing another)
    mouth_weight: float = 2.0      # extra loss weight on the mouth box's latent cells
    p_true: float = 0.0            # with ks_poses: windows trained on the frames' own lips poses (train_features)
    true_noise: float = 0.3        # and the noise added to them (normalised units)
    shared: float = 0.0            # training noise: half the windows with this part shared by their frames
    temporal: float = 0.0          # loss weight of the error's frame-to-frame change (diffusion.loss)
    edm: diffusion.EDMConfig = dataclasses.field(default_factory=diffusion.EDMConfig)

    @property
    def length(self):
        """Frames the model denoises at once: T keyframes, or the S + 1 frames from one keyframe to the next."""
        return self.stride + 1 if self.interp else self.frames

    @property
    def span(self):
        """Video frames one training window covers."""
        return self.stride + 1 if self.interp else (self.frames - 1) * self.stride + 1

    def positions(self):
        """Each denoised frame's place in its window, in video frames (T,)."""
        return torch.arange(self.length) * (1 if self.interp else self.stride)


def edit_mask(occluder, h):
    """Latent edit mask: lower-face box AND NOT occluder. occluder (..., R, R) bool or None -> (..., 1, h, h).
    A latent cell with any occluder pixel is kept from the source (the occluder must not be repainted)."""
    x0, y0, x1, y1 = face.region(face.LOWER_FACE, h)
    box = torch.zeros(h, h)
    box[y0:y1, x0:x1] = 1
    if occluder is None:
        return box[None]
    occ = torch.as_tensor(occluder).float()
    cells = F.adaptive_max_pool2d(occ.flatten(0, -3)[:, None], h).reshape(*occ.shape[:-2], 1, h, h)
    return box * (1 - cells)


def pixel_mask(mask, size):
    """A latent edit mask (N, 1, h, w) -> the pixels it decides (N, 1, size, size) in [0, 1], feathered by
    size / 32 across its edge. The decoder spreads a latent cell's change a few pixels around it, so
    the regenerated lower face reached past the box (14 test clips: the frame outside the lower face
    changed 1.53x as much as the source from frame to frame, 1.26x through the autoencoder alone);
    outside this mask the output takes the source's decoded pixels instead."""
    f = max(1, size // 32)
    m = F.interpolate(mask.float(), size=(size, size), mode="nearest")
    return F.avg_pool2d(m, 2 * f + 1, 1, f, count_include_pad=False)


def audio_windows(features, frames, width):
    """Per-frame features (B, N, A) -> each chosen frame's window of `width` around it (B, len(frames), W, A),
    clamped at the ends."""
    idx = (torch.as_tensor(frames)[:, None] + torch.arange(width) - width // 2).clamp(0, features.shape[1] - 1)
    return features[:, idx]


def blend_ends(x):
    """Windows (B, T, ...) -> their first and last frames blended linearly over time (B, T, ...): where
    the frames between two keyframes start from (`start` in the samplers)."""
    w = torch.linspace(0, 1, x.shape[1], device=x.device).reshape(1, -1, *([1] * (x.dim() - 2)))
    return (1 - w) * x[:, :1] + w * x[:, -1:]


class KeySync(LatentVideoModel):
    """One KeySync model (keyframe or interpolation). ae: the frozen autoencoder; audio: the frozen
    pose model's AudioEncoder."""

    def __init__(self, cfg, ae, audio):
        super().__init__(ae, audio)
        self.cfg = cfg
        c = cfg.latent
        self.net = Backbone(BackboneConfig(inputs=3 * c + 2, outputs=c, channels=tuple(cfg.channels),
                                           audio_dim=cfg.audio_dim))
        h = cfg.resolution // ae.cfg.factor
        self.register_buffer("mouth", face.region_mask(face.MOUTH, h)[None], persistent=False)      # (1, h, w)
        self.register_buffer("redraw", face.region_mask(face.PASTE, h, feather=1.0)[None], persistent=False)

    def forward_net(self, x, c_noise, cond, audio, keep):
        """F of diffusion.denoise: x (B, T, 4, h, w) scaled, cond (B, T, 10, h, w) -> (B, T, 4, h, w)."""
        pos = self.cfg.positions().to(x.device)
        return self.net(torch.cat([x, cond.to(x.dtype)], 2), c_noise, audio, keep, pos)

    def conditions(self, source, mask, ref, known):
        """source (B, T, 4, h, w), mask (B, T, 1, h, w), ref (B, 4, h, w), known (B, T) -> (B, T, 10, h, w)."""
        b, t, _, h, w = source.shape
        return torch.cat([source * (1 - mask), mask, ref[:, None].expand(-1, t, -1, -1, -1),
                          known[:, :, None, None, None].float().expand(-1, -1, 1, h, w)], 2)

    def loss(self, batch):
        """Self-reconstruction: the clip's own latents are the target and, outside the mask, the source."""
        cfg = self.cfg
        z = batch["video_features"]                                    # (B, span, 4, h, w) latents of the window
        b, dev = z.shape[0], z.device
        idx = cfg.positions().to(dev)
        x0 = z[:, idx]                                                 # (B, T, 4, h, w)
        occ = batch.get("occluder")
        mask = edit_mask(None if occ is None else occ[:, idx.cpu()], x0.shape[-1]).to(dev)
        mask = mask.expand(b, len(idx), -1, -1, -1)
        known = torch.zeros(b, len(idx), dtype=torch.bool, device=dev)
        if cfg.interp:
            known[:, [0, -1]] = True
        else:
            known[:, 0] = torch.rand(b, device=dev) < cfg.p_first
        mask = mask * (~known)[:, :, None, None, None]
        keep_ref, keep_audio = diffusion.drop(b, cfg.p_all, cfg.p_audio, device=dev)
        ref = batch["refs_features"][:, 0] * keep_ref[:, None, None, None]
        feats = self.train_features(batch["audio"], batch.get("video"), cfg.p_true, cfg.true_noise)      # (B, span, A)
        audio = audio_windows(feats, idx.cpu(), cfg.audio_window)
        cond = self.conditions(x0, mask, ref, known)
        weight = mask * (1 + cfg.mouth_weight * self.mouth)
        loss = diffusion.loss(self.forward_net, x0, cfg.edm, weight=weight,
                              prepare=lambda x: mask * x + (1 - mask) * x0, shared=cfg.shared, temporal=cfg.temporal,
                              cond=cond, audio=audio, keep=keep_audio)
        return loss, {}

    forward = loss

    @torch.no_grad()
    def sample(self, source, mask, ref, audio, known, noise, steps=10, s_ref=1.0, s_audio=4.0, start=0):
        """Generate latents (B, T, 4, h, w): source (B, T, 4, h, w) is the clean latent kept outside `mask`
        (B, T, 1, h, w) (and on known frames, whose mask is 0); ref (B, 4, h, w); audio (B, T, W, A)
        windows; known (B, T) bool; noise (B, T, 4, h, w). s_ref = s_audio = 1: one pass, no guidance.
        start > 0 (interpolation): begin `start` of the `steps` levels down, from the known endpoints
        blended linearly over time (B, T) plus noise, so the frames between keyframes move smoothly; the
        model redraws the mouth's region (face.PASTE, soft-edged), the rest of the mask keeps the blend."""
        mask = mask * (~known)[:, :, None, None, None]
        cond = self.conditions(source, mask, ref, known)
        bare = self.conditions(source, mask, torch.zeros_like(ref), known)
        edm, b = self.cfg.edm, len(source)

        def denoise(x, sigma, with_ref, with_audio):
            k = len(x) // b                                            # 1 or the 3 guidance passes
            c = torch.where(with_ref[:, None, None, None, None], cond.repeat(k, 1, 1, 1, 1), bare.repeat(k, 1, 1, 1, 1))
            return diffusion.denoise(self.forward_net, x, sigma, edm, cond=c, audio=audio.repeat(k, 1, 1, 1),
                                     keep=with_audio)
        # audio guidance inside the mouth box only (h, w): amplifying the audio's effect on cheeks
        # and chin only adds frame-to-frame noise there (measured: flicker 2.63 -> 2.09, same r)
        local = 1 + (s_audio - 1) * self.mouth[0] if s_audio != 1 else 1.0
        denoiser = diffusion.guided(denoise, s_ref, local)
        if not start:
            return diffusion.euler(denoiser, noise, edm, steps, replace=lambda x: mask * x + (1 - mask) * source)
        # between keyframes the cheeks and chin only move with the head: the keyframes' blend is their
        # steadiest guess, and redrawn they flickered (14 clips: 1.46 -> 1.39 with the blend, same r)
        blend = blend_ends(source)
        free, fixed = mask * self.redraw, mask * blend + (1 - mask) * source
        return diffusion.euler(denoiser, noise, edm, steps, replace=lambda x: free * x + (1 - free) * fixed,
                               init=blend, start=start)


class Dubber:
    """KeySync over a whole video, window by window: keyframes, then the frames between them.

        dub = Dubber(key, interp)
        dub.set_reference(crop)                       # (R, R, 3) uint8: a frame of the source video
        for latents in dub.run(crop_chunks, occluder_chunks, audio): ...

    The noise of window w comes from (seed, w) alone, so a result does not depend on chunking."""

    def __init__(self, key, interp, steps=10, s_ref=1.0, s_audio=4.0, seed=0, device="cpu", start=8, shared=0.8):
        if key.cfg.interp or not interp.cfg.interp or interp.cfg.stride != key.cfg.stride:
            raise ValueError("Dubber needs a keyframe model and an interpolation model with the same stride")
        self.key, self.interp = key.to(device).eval(), interp.to(device).eval()
        self.steps, self.s_ref, self.s_audio, self.seed, self.device = steps, s_ref, s_audio, seed, device
        # the frames between keyframes start from the keyframes blended over time, `start` of the steps
        # levels down (8 of 10: σ 0.02): the keyframes fix the motion, the model redraws the detail; from
        # pure noise each one was redrawn and the video flickered (14 clips: start 7, σ 0.12: flicker 1.96;
        # 8: 1.70; 9, σ 0.002, where the model hardly acts and the blend is the output: 1.61; r 0.856-0.857)
        self.start = round(start * steps / 10)
        # the part of every frame's starting noise all frames share (diffusion.shared_noise): 0 -> 0.8
        # on 14 test clips, r_driving 0.825 -> 0.850, flicker 2.03 -> 1.92 (0.95 and 1: no further); a
        # keyframe model trained on independent noise only leaves fixed colour specks with it on real
        # footage: train with `shared` (config/keysync_key_synth.py)
        self.shared = shared
        self.ref = None

    @property
    def hop(self):
        """New frames per keyframe window: (T - 1) * S."""
        return (self.key.cfg.frames - 1) * self.key.cfg.stride

    @torch.no_grad()
    def set_reference(self, crop):
        self.ref = self.key.encode(torch.as_tensor(crop)[None].to(self.device))      # (1, 4, h, w)

    @torch.no_grad()
    def window(self, w, source, occluder, features, prev):
        """Window w: source latents (hop + 1, 4, h, w) of its frames (the first one shared with window
        w - 1), their occluder masks (hop + 1, R, R) or None, audio features of those frames for the
        keyframe and the interpolation model (with the W // 2 either side: (hop + 1 + 2 * (W // 2), A)
        each, or one tensor for both), prev: the last window's final keyframe latent (4, h, w) or None
        -> latents of all hop + 1 frames."""
        kc, ic = self.key.cfg, self.interp.cfg
        dev, s = self.device, kc.stride
        half = kc.audio_window // 2
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + w)
        mask = edit_mask(occluder, source.shape[-1]).to(dev).expand(len(source), -1, -1, -1)   # (hop+1, 1, h, w)
        feats, feats_i = (features, features) if torch.is_tensor(features) else features
        feats, feats_i = feats[None].to(dev), feats_i[None].to(dev)
        # keyframes
        idx = torch.arange(kc.frames) * s
        known = torch.zeros(1, kc.frames, dtype=torch.bool, device=dev)
        src = source[idx].clone()
        if prev is not None:
            src[0], known[0, 0] = prev, True
        mix = lambda e: diffusion.shared_noise(e.to(dev), self.shared, self.seed)
        noise = mix(torch.randn(1, kc.frames, *source.shape[1:], generator=g))
        keys = self.key.sample(src[None], mask[idx][None], self.ref, audio_windows(feats, idx + half, kc.audio_window),
                               known, noise, self.steps, self.s_ref, self.s_audio)[0]        # (T, 4, h, w)
        # the S - 1 frames between each pair of keyframes, all pairs in one batch
        pairs = torch.arange(kc.frames - 1)[:, None] * s + torch.arange(s + 1)             # (T - 1, S + 1)
        src = source[pairs].clone()
        src[:, 0], src[:, -1] = keys[:-1], keys[1:]
        known = torch.zeros(len(pairs), s + 1, dtype=torch.bool, device=dev)
        known[:, [0, -1]] = True
        audio = torch.cat([audio_windows(feats_i, p + half, ic.audio_window) for p in pairs])
        noise = mix(torch.randn(len(pairs), s + 1, *source.shape[1:], generator=g))
        between = self.interp.sample(src, mask[pairs], self.ref.expand(len(pairs), -1, -1, -1), audio, known, noise,
                                     self.steps, self.s_ref, self.s_audio, self.start)     # (T - 1, S + 1, 4, h, w)
        return torch.cat([between[:, :-1].flatten(0, 1), keys[-1:]])                       # (hop + 1, 4, h, w)

    @torch.no_grad()
    def run(self, crops, occluders, audio):
        """crops: an iterable of uint8 (R, R, 3) source crops (n frames, n = len(audio) / 640 rounded up);
        occluders: an iterable of (R, R) bool masks or None; audio: 16 kHz (n * 640,) -> yields, in order,
        (source crop, KeySync crop, recon) uint8 triples, one per frame (recon: the source through the
        autoencoder, for face.paste)."""
        if self.ref is None:
            raise RuntimeError("call set_reference() first")
        audio = torch.as_tensor(audio, dtype=torch.float32)
        n = -(-audio.shape[-1] // 640)
        mel = log_mel(audio)                                             # (4n, 80): small even for hours
        half, hop = self.key.cfg.audio_window // 2, self.hop
        crops, occluders = iter(crops), (iter(occluders) if occluders is not None else None)
        held, held_occ, prev = [], [], None
        margin = 12                                                      # frames of audio context either side
        for w, start in enumerate(range(0, max(n - 1, 1), hop)):
            while len(held) < hop + 1:                                   # the window's frames; past the end the last repeats
                c = next(crops, None)
                o = next(occluders) if occluders is not None and c is not None else None
                held.append(c if c is not None else held[-1])
                held_occ.append(o if c is not None else held_occ[-1])
            source = self.key.encode(torch.as_tensor(np.stack(held)).to(self.device))      # (hop + 1, 4, h, w)
            occ = None if occluders is None else torch.as_tensor(np.stack(held_occ))
            span = mel_span(mel, start - half - margin, hop + 1 + 2 * (half + margin))[None].to(self.device)
            cut = slice(margin, margin + hop + 1 + 2 * half)
            feats = self.key.audio(span)[0, cut]
            # each model its own features (one with lips poses, the other without, is allowed)
            feats_i = feats if self.interp.audio is self.key.audio else self.interp.audio(span)[0, cut]
            lat = self.window(w, source, occ, (feats, feats_i), prev)
            prev = lat[-1]
            dec = self.key.ae.decode(torch.cat([lat, source])).float()                    # (2 (hop + 1), 3, R, R)
            m = pixel_mask(edit_mask(occ, source.shape[-1]).to(dec.device).expand(len(lat), -1, -1, -1),
                           dec.shape[-1])
            dec[:len(lat)] = m * dec[:len(lat)] + (1 - m) * dec[len(lat):]
            out = to_uint8(dec).cpu().numpy()
            first = 0 if w == 0 else 1                                   # frame `start` was emitted by window w - 1
            for i in range(first, hop + 1):
                if start + i < n:
                    yield held[i], out[i], out[hop + 1 + i]
            held, held_occ = held[-1:], held_occ[-1:]

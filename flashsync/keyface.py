"""KeyFace (Bigata et al., CVPR 2025): one face image + audio -> a long talking video (DESIGN.md §4).

Two models on the shared core (diffusion.py) and backbone (backbone.py), as KeySync's, but no
source video is kept: every pixel is generated, from

  identity  the latent of one face image, channel-concatenated to every frame
  audio     the frozen pose-model audio encoder's per-frame features (why that one: keysync.py),
            cross-attended and added to the noise-level embedding (backbone.py)
  events    the audio-event encoder's per-frame probabilities of silence / speech / laugh / sigh
            (events.py, the role BEATs plays in the paper), through a linear layer, added
  emotion   per-frame valence and arousal, each through a sinusoidal embedding, added; or a
            learned "unknown" (condition dropout, and clips without labels)

  keyframe model       T keyframes S frames apart
  interpolation model  the S - 1 frames between two keyframes, given both (known-frame channel)

    input (B, T, 13, h, w) = [c_in x | identity | known latents (0 elsewhere) | known]

With no emotion asked for, the model runs with "unknown" and draws the emotion the audio and
the events imply, as it learned to on the dropped-out windows: one model, no regressor whose
errors would be fed back as if they were requests.

Long audio (`Animator`): keyframe chunks of T over the whole audio, consecutive chunks sharing
`overlap` keyframes, all on the same identity. All chunks are denoised together and at every
Euler step each shared keyframe takes the mean of its chunks' denoised values, so chunks agree
where they meet (no seams; MultiDiffusion, Bar-Tal et al. 2023, does the same over space). Then
the interpolation model fills each pair of keyframes, a bounded group at a time, decoded and
yielded in order. Memory is bounded by the chunk batch, not the length: what grows with the
audio is the keyframe latents (4 KB each at 64 px) and the per-frame features.
"""
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync import diffusion
from flashsync.audio import log_mel
from flashsync.backbone import Backbone, BackboneConfig, LatentVideoModel
from flashsync.face import EYES, MOUTH, region_mask
from flashsync.keysync import KeySyncConfig, audio_windows, blend_ends
from flashsync.lipsync import span_features
from flashsync.nn import sinusoid, to_uint8
from flashsync.speech import LAUGH, SIGH, SPEECH


@dataclasses.dataclass
class KeyFaceConfig(KeySyncConfig):
    """KeySync's window layout (frames, stride, audio window, dropout) plus KeyFace's conditions."""
    events: int = 4                # NSV feature width (events.CLASSES)
    emb: int = 256                 # the backbone's embedding width
    emo_scale: float = 100.0       # valence / arousal (about -1.5 .. 1.5) times this enter the sinusoids
    p_emotion: float = 0.3         # emotion dropout: the window trains as "unknown"
    eyes_weight: float = 0.0       # extra loss weight on the eyes' and brows' latent cells (face.EYES), as mouth_weight:
                                   # arousal and sighs' lids show there (at 4, one model: arousal r 0.21 -> 0.77)
    emo_weight: float = 0.0        # > 0: a reader of valence / arousal from latents trains beside the model, and the
                                   # model's denoised frames must read as the emotion asked, with this weight
    overlap: int = 2               # keyframes consecutive chunks share (Animator)


NSV_MARGIN = 8      # frames: how far before and after a laugh or a sigh the emotion term leaves the face alone


def near_nsv(label):
    """SynthTalk labels (B, L) -> (B, L) bool: within NSV_MARGIN frames of a laugh or a sigh frame. A sigh's lids
    fall and rise over several frames around its label, and the term at weight 0.15 lost most sighs (rendered
    56.6 % -> 20.6 % on the eval's 10 faces); sparing the frames around them as well bought only 25.7 %
    (read before the eye whites were cubed; re-read since: 53.7 % without the term, 25.0 % with term and margin)."""
    nsv = ((label == LAUGH) | (label == SIGH)).float()[:, None]                           # (B, 1, L)
    return F.max_pool1d(nsv, 2 * NSV_MARGIN + 1, stride=1, padding=NSV_MARGIN)[:, 0] > 0


class KeyFace(LatentVideoModel):
    """One KeyFace model (keyframe or interpolation). ae, audio: frozen as KeySync's; events: the frozen
    audio-event encoder."""

    def __init__(self, cfg, ae, audio, events):
        super().__init__(ae, audio)
        self.cfg = cfg
        self.events = events.requires_grad_(False).eval()
        c, e = cfg.latent, cfg.emb
        self.net = Backbone(BackboneConfig(inputs=3 * c + 1, outputs=c, channels=tuple(cfg.channels),
                                           audio_dim=cfg.audio_dim, emb=e))
        self.emotion = nn.Sequential(nn.Linear(2 * e, e), nn.SiLU(), nn.Linear(e, e))
        self.unknown = nn.Parameter(torch.zeros(e))      # the embedding of "no emotion given"
        self.nsv = nn.Linear(cfg.events, e)
        self.no_nsv = nn.Parameter(torch.zeros(e))       # no audio, so no events either
        h = cfg.resolution // ae.cfg.factor
        self.register_buffer("mouth", region_mask(MOUTH, h)[None], persistent=False)     # (1, h, w)
        self.register_buffer("eyes", region_mask(EYES, h)[None], persistent=False)       # (1, h, w)
        if cfg.emo_weight > 0:    # (N, 4, h, w) latents -> (N, 2): where on the face matters (brows, cheeks), so no pooling
            self.reader = nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
                                        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
                                        nn.Flatten(), nn.Linear(64 * (h // 4) ** 2, 2))

    def train(self, mode=True):
        super().train(mode)
        self.events.eval()
        return self

    @torch.no_grad()
    def event_features(self, audio):
        """16 kHz audio (B, L * 640) -> (B, L, 4) event probabilities."""
        return self.events.features(audio)

    def extra(self, emotion, events, with_audio):
        """Per-frame embedding added to the noise level: emotion (B, T, 2) valence, arousal (NaN:
        unknown), events (B, T, 4), with_audio (B,) bool -> (B, T, E)."""
        e = self.cfg.emb
        known = ~emotion.isnan().any(-1, keepdim=True)                               # (B, T, 1)
        va = torch.nan_to_num(emotion) * self.cfg.emo_scale
        emo = self.emotion(torch.cat([sinusoid(va[..., 0], e), sinusoid(va[..., 1], e)], -1))
        emo = torch.where(known, emo, self.unknown.to(emo.dtype))
        nsv = torch.where(with_audio[:, None, None], self.nsv(events.to(emo.dtype)), self.no_nsv.to(emo.dtype))
        return emo + nsv

    def forward_net(self, x, c_noise, cond, audio, keep, extra):
        """F of diffusion.denoise: x (B, T, 4, h, w) scaled, cond (B, T, 9, h, w) -> (B, T, 4, h, w)."""
        pos = self.cfg.positions().to(x.device)
        return self.net(torch.cat([x, cond.to(x.dtype)], 2), c_noise, audio, keep, pos, extra.to(x.dtype))

    def conditions(self, identity, given, known):
        """identity (B, 4, h, w), given (B, T, 4, h, w) latents of the known frames, known (B, T) bool
        -> (B, T, 9, h, w)."""
        b, t, _, h, w = given.shape
        k = known[:, :, None, None, None].to(given.dtype)
        return torch.cat([identity[:, None].expand(-1, t, -1, -1, -1), given * k, k.expand(-1, -1, 1, h, w)], 2)

    def loss(self, batch):
        """The clip's own latents are the target; a frame of the same clip outside the window is the identity."""
        cfg = self.cfg
        z = batch["video_features"]                                    # (B, span, 4, h, w)
        b, dev = z.shape[0], z.device
        idx = cfg.positions().to(dev)
        x0 = z[:, idx]                                                 # (B, T, 4, h, w)
        known = torch.zeros(b, len(idx), dtype=torch.bool, device=dev)
        if cfg.interp:
            known[:, [0, -1]] = True
        else:
            known[:, 0] = torch.rand(b, device=dev) < cfg.p_first     # a chunk continuing another
        keep_ref, keep_audio = diffusion.drop(b, cfg.p_all, cfg.p_audio, device=dev)
        identity = batch["refs_features"][:, 0] * keep_ref[:, None, None, None]
        feats = self.train_features(batch["audio"], batch.get("video"), cfg.p_true, cfg.true_noise)      # (B, span, A)
        audio = audio_windows(feats, idx.cpu(), cfg.audio_window)
        events = self.event_features(batch["audio"])[:, idx]
        truth = torch.stack([batch["valence"], batch["arousal"]], -1)[:, idx].float()       # (B, T, 2)
        emotion = truth.clone()
        emotion[torch.rand(b, device=dev) < cfg.p_emotion] = float("nan")
        cond = self.conditions(identity, x0, known)
        weight = (~known)[:, :, None, None, None] * (1 + cfg.mouth_weight * self.mouth + cfg.eyes_weight * self.eyes)
        loss = diffusion.loss(self.forward_net, x0, cfg.edm, weight=weight,
                              prepare=lambda x: torch.where(known[:, :, None, None, None], x0, x), shared=cfg.shared,
                              temporal=cfg.temporal, cond=cond, audio=audio, keep=keep_audio,
                              extra=self.extra(emotion, events, keep_audio),
                              aux=self.emotion_aux(x0, truth, emotion, known, near_nsv(batch["label"])[:, idx])
                              if cfg.emo_weight > 0 else None)
        return loss, {}

    def emotion_aux(self, x0, truth, asked, known, nsv):
        """The auxiliary emotion term of the loss, as diffusion.loss's aux. The diffusion loss alone let the
        model ignore its emotion condition (the cues are a few latent cells: brows, lids, cheeks, mouth
        corners), so: the reader learns valence / arousal from the clean latents x0 (B, T, 4, h, w) and
        their truth (B, T, 2); through a frozen copy of it the denoised frames must read as `asked`
        (B, T, 2; NaN: dropped out) where they are generated (not `known`), at σ < 1 (above, the
        estimate is a blur the reader never saw). Frames in or near a laugh or a sigh (nsv (B, T) bool) ask
        nothing: a laugh is the audio's, and asking it for an emotion's smile undid it (laugh frames read as
        laughs 65 % -> 3 %).
        Hiding the mouth box from the reader as well made it worse: sync r 0.66 -> 0.18, the frames washed out;
        the reader sees it, and only its gradient stops at the mouth box."""
        ok = truth.isfinite().all(-1)                                                 # (B, T): frames with labels

        def read(params, z):                                                          # (B, T, 4, h, w) -> (B, T, 2)
            return torch.func.functional_call(self.reader, params, (z.flatten(0, 1),)).unflatten(0, z.shape[:2])
        live = dict(self.reader.named_parameters())
        own = (((read(live, x0) - truth.nan_to_num()) ** 2).sum(-1) * ok).sum() / ok.sum().clamp(min=1)   # no branch on data
        frozen = {k: v.detach() for k, v in live.items()}
        want = asked.isfinite().all(-1) & ~known & ~nsv                                # (B, T)

        def aux(denoised, sigma):
            # the reader sees the mouth (a smile is its corners) but its pull does not reach the mouth's cells,
            # which sync owns (at weight 0.3 sync r 0.779 -> 0.789, sighs rendered 44.3 -> 65.7 %), nor the
            # eyes', which the sighs' lids need (weight 0.15 with eyes_weight 4: sighs 38.2 -> 81.2 %, README)
            denoised = torch.where((self.mouth > 0) | (self.eyes > 0), denoised.detach(), denoised)
            miss = ((read(frozen, denoised) - asked.nan_to_num()) ** 2).sum(-1)      # (B, T)
            w = (want & (sigma < 1.0)[:, None]).float()
            return own + self.cfg.emo_weight * (miss * w).sum() / w.sum().clamp(min=1)
        return aux

    forward = loss

    def denoiser(self, identity, given, known, audio, events, emotion, s_ref=1.0, s_audio=4.0, s_nsv=0.0):
        """The guided denoiser (x (B, T, 4, h, w), sigma (B,)) -> D of a batch of windows: identity
        (B, 4, h, w), given (B, T, 4, h, w) with known (B, T), audio (B, T, W, A) windows, events
        (B, T, 4), emotion (B, T, 2) (NaN: unknown). The emotion asked for is given in the full pass
        only (the others run "unknown"), so s_audio guides it with the audio: the weakly learned
        emotion is amplified too (arousal r 0.10 -> 0.35 on the test faces, README).

        s_nsv > 0 and a laugh or a sigh in the window: a fourth pass hears the same audio with its events
        called speech, and D gains s_nsv p (D_full - D_speech), p the frame's laugh + sigh probability:
        what the event adds over the same sound heard as speech. Without it the laughs got a sigh's lowered
        lids (laughs / sighs read as such on the eval's 10 faces: 69 / 86 %; with s_nsv 16: 81 / 87 %, README)."""
        cond = self.conditions(identity, given, known)
        bare = self.conditions(torch.zeros_like(identity), given, known)
        edm, b = self.cfg.edm, len(identity)

        def denoise(x, sigma, with_ref, with_audio, ev=None):
            k = len(x) // b                                            # 1, the 3 guidance passes or 4
            c = torch.where(with_ref[:, None, None, None, None], cond.repeat(k, 1, 1, 1, 1), bare.repeat(k, 1, 1, 1, 1))
            emo = emotion.repeat(k, 1, 1)
            emo = torch.where(with_audio[:, None, None], emo, torch.full_like(emo, float("nan")))
            extra = self.extra(emo, events.repeat(k, 1, 1) if ev is None else ev, with_audio)
            return diffusion.denoise(self.forward_net, x, sigma, edm, cond=c, audio=audio.repeat(k, 1, 1, 1),
                                     keep=with_audio, extra=extra)
        p = events[..., LAUGH] + events[..., SIGH]                         # (B, T)
        if not s_nsv or not bool((p > 0.05).any()):                        # (inference: a branch on data is fine)
            return diffusion.guided(denoise, s_ref, s_audio)
        speech = torch.zeros_like(events)
        speech[..., SPEECH] = 1
        ev = torch.cat([events, events, events, speech])

        def run(x, sigma):
            i = torch.arange(4 * b, device=x.device)
            null, ref, full, heard = denoise(torch.cat([x] * 4), torch.cat([sigma] * 4), i >= b, i >= 2 * b, ev).chunk(4)
            return diffusion.guide(null, ref, full, s_ref, s_audio) + s_nsv * p[..., None, None, None] * (full - heard)
        return run

    @torch.no_grad()
    def sample(self, identity, given, known, audio, events, emotion, noise, steps=10, s_ref=1.0, s_audio=4.0,
               start=0, s_nsv=0.0):
        """Generate latents (B, T, 4, h, w) of a batch of windows (arguments as `denoiser`); the known
        frames are `given` exactly. start > 0: from the endpoints blended over time (interpolation)."""
        den = self.denoiser(identity, given, known, audio, events, emotion, s_ref, s_audio, s_nsv)
        k = known[:, :, None, None, None]
        return diffusion.euler(den, noise, self.cfg.edm, steps, replace=lambda x: torch.where(k, given, x),
                               init=blend_ends(given) if start else None, start=start)


def chunks(n, size, overlap):
    """Start indices of windows of `size` over n items, consecutive windows sharing at least `overlap`;
    the last one ends at n (n >= size) -> list of starts covering 0 .. n - 1."""
    if n < size or not 0 <= overlap < size:
        raise ValueError(f"cannot cover {n} keyframes with windows of {size} sharing {overlap}")
    starts = list(range(0, n - size, size - overlap)) + [n - size]
    return sorted(set(starts))


def joint(denoise, windows, n):
    """A denoiser of a whole sequence (n, ...) from one of windows: denoise(x (G, T, ...), sigma (G,),
    group (G, T) indices) -> D; each item's D is the mean over the windows that hold it, so the windows
    agree where they overlap. windows: a list of (G, T) index tensors, run one group at a time."""
    def run(x, sigma):
        total = torch.zeros_like(x)
        count = torch.zeros(n, dtype=x.dtype, device=x.device)
        for group in windows:
            d = denoise(x[group], sigma[group[:, 0]], group)
            total.index_add_(0, group.flatten(), d.flatten(0, 1).to(x.dtype))
            count.index_add_(0, group.flatten(), torch.ones(group.numel(), dtype=x.dtype, device=x.device))
        return total / count.reshape(-1, *([1] * (x.dim() - 1)))
    return run


class Animator:
    """KeyFace over audio of any length, from one face crop:

        anim = Animator(key, interp)
        for frame in anim.run(crop, audio, emotion):     # crop (R, R, 3) uint8; emotion (n, 2) or None
            ...                                           # (R, R, 3) uint8 frames, in order

    first_is_identity: the first keyframe is the identity image itself (a video that starts from it)."""

    def __init__(self, key, interp, steps=10, s_ref=1.0, s_audio=4.0, seed=0, device="cpu", start=7, group=8,
                 s_nsv=16.0):
        if key.cfg.interp or not interp.cfg.interp or interp.cfg.stride != key.cfg.stride:
            raise ValueError("Animator needs a keyframe model and an interpolation model with the same stride")
        self.key, self.interp = key.to(device).eval(), interp.to(device).eval()
        self.steps, self.s_ref, self.s_audio, self.seed, self.device = steps, s_ref, s_audio, seed, device
        self.s_nsv = s_nsv                         # laugh / sigh guidance (KeyFace.denoiser)
        self.start = round(start * steps / 10)     # the in-between frames start from the blended keyframes (keysync.py)
        self.group = group                         # windows per network call: what bounds the memory

    @torch.no_grad()
    def conditions(self, audio, emotion, n):
        """Per-frame audio features (n, A), events (n, 4), emotion (n, 2) (NaN: unknown)."""
        mel = log_mel(torch.as_tensor(audio, dtype=torch.float32))
        feats = span_features(lambda m: self.key.audio(m.to(self.device)), mel, n)
        events = span_features(lambda m: self.key.events.logits(m.to(self.device)).float().softmax(-1), mel, n)
        emo = torch.full((n, 2), float("nan")) if emotion is None else torch.as_tensor(emotion, dtype=torch.float32)
        return feats, events, emo.to(self.device)

    @torch.no_grad()
    def keyframes(self, identity, feats, events, emo, n, first_is_identity=False):
        """Latents (K, 4, h, w) of the keyframes at frames 0, S, 2S, ... (K >= T, past n clamped)."""
        cfg, dev = self.key.cfg, self.device
        s, t = cfg.stride, cfg.frames
        k = max(t, -(-(n - 1) // s) + 1)
        frames = (torch.arange(k) * s).clamp(max=n - 1)                 # the video frame of each keyframe
        starts = chunks(k, t, cfg.overlap)
        wins = torch.tensor(starts)[:, None] + torch.arange(t)           # (C, T) keyframe indices
        groups = list(wins.split(self.group))
        audio = audio_windows(feats[None], frames, cfg.audio_window)[0]                     # (K, W, A)
        known = torch.zeros(k, dtype=torch.bool, device=dev)
        given = torch.zeros(k, *identity.shape[1:], device=dev)
        if first_is_identity:
            known[0], given[0] = True, identity[0]

        def denoise(x, sigma, group):
            den = self.key.denoiser(identity.expand(len(group), -1, -1, -1), given[group], known[group],
                                    audio[group], events[frames[group]], emo[frames[group]], self.s_ref, self.s_audio,
                                    self.s_nsv)
            return den(x, sigma)
        g = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(k, *identity.shape[1:], generator=g).to(dev)
        kk = known[:, None, None, None]
        return diffusion.euler(joint(denoise, groups, k), noise, cfg.edm, self.steps,
                               replace=lambda x: torch.where(kk, given, x))

    @torch.no_grad()
    def chained(self, identity, feats, events, emo, n):
        """The ablation (eval): the same keyframes, but chunk after chunk, each conditioned on the last
        keyframe of the one before (as its identity and its given first frame) instead of the image:
        what generating a long video autoregressively means -> (K, 4, h, w)."""
        cfg, dev = self.key.cfg, self.device
        s, t = cfg.stride, cfg.frames
        k = max(t, -(-(n - 1) // s) + 1)
        frames = (torch.arange(k) * s).clamp(max=n - 1)
        out = []
        g = torch.Generator().manual_seed(self.seed)
        for start in chunks(k, t, 1):
            idx = torch.arange(start, start + t)
            done = sum(len(o) for o in out)                              # keyframes generated so far
            known = (idx < done)[None].to(dev)
            given = torch.zeros(1, t, *identity.shape[1:], device=dev)
            if done:
                prev = torch.cat(out)
                given[0, :done - start] = prev[start:done]
            noise = torch.randn(1, t, *identity.shape[1:], generator=g).to(dev)
            ident = identity if not done else out[-1][-1:]
            lat = self.key.sample(ident, given, known, audio_windows(feats[None], frames[idx], cfg.audio_window),
                                  events[frames[idx]][None], emo[frames[idx]][None], noise, self.steps, self.s_ref,
                                  self.s_audio, s_nsv=self.s_nsv)[0]
            out.append(lat[done - start:])
        return torch.cat(out)

    @torch.no_grad()
    def run(self, crop, audio, emotion=None, first_is_identity=False, joint_keys=True):
        """crop: the identity (R, R, 3) uint8; audio: 16 kHz (n * 640,); emotion: (n, 2) or None -> yields
        n uint8 (R, R, 3) frames in order. joint_keys=False: the keyframes chunk after chunk (`chained`)."""
        n = -(-len(audio) // 640)
        identity = self.key.encode(torch.as_tensor(crop)[None].to(self.device))           # (1, 4, h, w)
        feats, events, emo = self.conditions(audio, emotion, n)
        decode = lambda z: to_uint8(self.key.ae.decode(z).float()).cpu().numpy()
        keys = (self.keyframes(identity, feats, events, emo, n, first_is_identity) if joint_keys else
                self.chained(identity, feats, events, emo, n))
        cfg, s = self.interp.cfg, self.interp.cfg.stride
        pairs = -(-(n - 1) // s)
        g = torch.Generator().manual_seed(self.seed + 1)
        for p0 in range(0, pairs, self.group):
            p = torch.arange(p0, min(p0 + self.group, pairs))
            frames = (p[:, None] * s + torch.arange(s + 1)).clamp(max=n - 1)              # (G, S + 1)
            given = torch.zeros(len(p), s + 1, *keys.shape[1:], device=self.device)
            given[:, 0], given[:, -1] = keys[p], keys[p + 1]
            known = torch.zeros(len(p), s + 1, dtype=torch.bool, device=self.device)
            known[:, [0, -1]] = True
            noise = torch.randn(len(p), s + 1, *keys.shape[1:], generator=g).to(self.device)
            audio_w = audio_windows(feats[None], frames.flatten(), cfg.audio_window)[0].unflatten(0, (len(p), s + 1))
            lat = self.interp.sample(identity.expand(len(p), -1, -1, -1), given, known, audio_w, events[frames],
                                     emo[frames], noise, self.steps, self.s_ref, self.s_audio, self.start, self.s_nsv)
            out = decode(lat[:, :-1].flatten(0, 1))                  # frames p0 * S + i; a pair's last is the next's first
            for i in range(min(len(out), n - p0 * s)):
                yield out[i]
        if (n - 1) % s == 0:                                          # the last frame is a keyframe
            yield decode(keys[pairs:pairs + 1])[0]

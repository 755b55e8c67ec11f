"""FlashLips inference: driving audio -> lips poses -> edited face crops (DESIGN.md §4, §7).

One object serves sample.py, stream.py and the evaluation, so they compute the same thing:

    lips = LipSync.load("out/refine/ckpt.pt", "out/pose/ckpt.pt")
    lips.set_reference(crops)             # (K, R, R, 3) uint8 frames of the source video
    p = lips.poses(audio)                 # (T, 12): offline, overlapping windows blended
    p = lips.poses(audio, lookahead=2)    # streaming: frame t sees audio up to frame t + 2 (+ mel reach)
    out = lips.edit(crops, p[:B])         # (B, R, R, 3) uint8 -> (B, R, R, 3) uint8
    out, rec = lips.edit(crops, p[:B], recon=True)   # and each crop through the autoencoder, unedited
                                                     # (what face.paste needs to paste only the change)

Noise. The flow starts every frame from its own Gaussian noise, drawn from a
seed and the frame's index alone (blocks of 256 frames), so overlapping
windows, batches and a live stream all start a frame from the same noise, and a
streamed result equals the offline emulation of the same stream.

Streaming. Pose t is sampled on a window of `context` past frames, frame t and
`lookahead` future frames (audio features 2 frames further, which the mel
convolutions reach). Before the first frame the window holds silence and zero
noise, so every window has the same static shape.
"""
import functools
import itertools

import numpy as np
import torch

from flashsync.audio import MELS_PER_FRAME, SILENCE, log_mel
from flashsync.checkpoint import load_checkpoint, load_model
from flashsync.face import crop
from flashsync.nn import to_float, to_uint8
from flashsync.util import UserError, native_bf16

REF_SPAN = 100         # reference frames are spread over a video's first 4 s (a live stream sees no more)
NOISE_BLOCK = 256
CONTEXT = 24           # frames of past each streaming pose window holds
MEL_REACH = 2          # video frames of audio beyond a window that its last frame's features see


def reference_crops(faces, resolution, span=REF_SPAN):
    """4 face crops spread over the first `span` of `faces`, an iterable of (frame, box) -> (4, R, R, 3).
    A still or a very short video repeats its frames."""
    faces = list(itertools.islice(faces, span))
    pick = np.linspace(0, len(faces) - 1, 4).round().astype(int)
    return np.stack([crop(*faces[i], resolution) for i in pick])


def frame_noise(seed, start, n, dim=12):
    """The flow's starting noise for frames start .. start + n - 1 -> (n, dim); frames < 0 get zeros."""
    out = torch.zeros(n, dim)
    first, last = max(start, 0), start + n
    for b in range(first // NOISE_BLOCK, (last - 1) // NOISE_BLOCK + 1 if last > first else 0):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        block = torch.randn(NOISE_BLOCK, dim, generator=g)
        lo, hi = max(first, b * NOISE_BLOCK), min(last, (b + 1) * NOISE_BLOCK)
        out[lo - start:hi - start] = block[lo - b * NOISE_BLOCK:hi - b * NOISE_BLOCK]
    return out


def mel_span(mel, start, n):
    """Video frames start .. start + n - 1 of a (M, 80) log-mel -> (4n, 80), silence outside it."""
    a, b = start * MELS_PER_FRAME, (start + n) * MELS_PER_FRAME
    out = torch.full((b - a, mel.shape[1]), SILENCE)
    lo, hi = max(a, 0), min(b, mel.shape[0])
    if hi > lo:
        out[lo - a:hi - a] = mel[lo:hi]
    return out


def span_features(encode, mel, n, chunk=250, margin=25):
    """Full-context features of a long recording in bounded pieces: encode(log-mel (1, 4m, 80)) ->
    (1, m, F) run over `chunk` frames at a time with `margin` frames of context either side, of a
    (M, 80) log-mel -> (n, F). Attention over hours would not fit; 1 s of context is plenty."""
    out = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        span = mel_span(mel, start - margin, m + 2 * margin)[None]
        out.append(encode(span)[0, margin:margin + m])
    return torch.cat(out)


class LipSync:
    """A trained editor (mask-free `refine`, or the masked `editor`) driven by a trained pose model."""

    def __init__(self, editor, pose=None, seq_len=50, device="cpu", fast=False, batch=16, guidance=3.0, bf16=None):
        self.masked = not hasattr(editor, "teacher")
        self.base = editor if self.masked else editor.teacher        # holds the autoencoder and lips encoder
        self.net = editor.net.to(device).eval()
        self.ae = self.base.ae.to(device).eval()
        self.base.to(device)
        self.flow = pose.flow.to(device).eval() if pose is not None else None
        # audio guidance needs a pose model trained with audio dropout; older ones sample unguided
        self.guidance = guidance if self.flow is not None and self.flow.cfg.audio_drop > 0 else 1.0
        self.seq_len = seq_len
        self.device = device
        self.resolution = self.base.cfg.resolution
        self.ref_feat = self.ref_poses = None
        # the fast path: one compiled step with static shapes (batches padded to `batch`); on CUDA
        # also channels_last and CUDA graphs (reduce-overhead), outputs copied before the next replay
        self.fast, self.batch = fast, batch
        self.cuda = str(device).startswith("cuda")
        # the step in bf16 where that is native (None: CUDA GPUs and CPUs with AVX512-BF16 or AMX): 256 px
        # on 2 such CPU cores 29 -> 18 ms eager, 23 -> 16 fast (see the README for what it changes)
        self.bf16 = native_bf16(device) if bf16 is None else bf16
        self.step, self.stream_sample = self._step, self._sample
        if fast:
            if self.cuda:
                self.net.to(memory_format=torch.channels_last)
                self.ae.to(memory_format=torch.channels_last)
            self.step = torch.compile(self._step, mode="reduce-overhead" if self.cuda else None, dynamic=False)
            # a stream's pose windows all have one shape (context + pose_frames + lookahead frames): compiled,
            # the sampler's small matmuls and norms fuse, in bf16 where it is native (a window at 256 px on
            # 2 cores: 20 -> 14 ms; poses move by ~1 % of their size); offline windows vary, stay eager
            if self.flow is not None:
                self.stream_sample = torch.compile(functools.partial(self._sample, bf16=self.bf16), dynamic=False)

    @classmethod
    def load(cls, editor_path, pose_path, device="cpu", fast=False, batch=16, guidance=3.0, bf16=None):
        ed = load_checkpoint(editor_path)
        if ed["kind"] not in ("refine", "editor"):
            raise UserError(f"{editor_path} holds a {ed['kind']!r} model; --editor needs a 'refine' (mask-free) "
                            f"or 'editor' checkpoint, e.g. out/refine/ckpt.pt")
        pose_ckpt = load_checkpoint(pose_path, "pose")
        editor = load_model(editor_path)
        pose = load_model(pose_path, "pose")
        lips = editor.lips if ed["kind"] == "editor" else editor.teacher.lips
        # the poses live in the space of one lips encoder: the pose model's must be the editor's
        if any(not torch.equal(a, b) for a, b in zip(lips.state_dict().values(), pose.lips.state_dict().values())):
            raise UserError(f"{pose_path} was trained on another editor than {editor_path}; "
                            f"use the pose model trained with --init_from on this editor's masked editor")
        return cls(editor, pose, pose_ckpt["config"]["seq_len"], device, fast, batch, guidance, bf16)

    @torch.no_grad()
    def set_reference(self, crops):
        """K uint8 crops (K, R, R, 3) of the source video: the editor's references and the speaker's style."""
        refs = torch.as_tensor(crops).to(self.device)
        if refs.shape[1:] != (self.resolution, self.resolution, 3):
            raise ValueError(f"reference crops must be ({self.resolution}, {self.resolution}, 3), got {tuple(refs.shape[1:])}")
        x = to_float(refs)                                            # (K, 3, R, R)
        self.ref_feat = self.net.ref_features(self.ae.encode(x)[None])   # (1, K * 8, h, w): once per video
        self.ref_poses = self.base.lips(x)[None]                      # (1, K, 12)

    @torch.no_grad()
    def _sample(self, mel, noise, steps, lookahead, bf16=False):
        """Batched flow sampling: mel (B, 4(n + 2), 80), noise (B, n, 12) -> raw poses (B, n, 12)."""
        refs = self.ref_poses.expand(mel.shape[0], -1, -1)
        with torch.autocast("cuda" if self.cuda else "cpu", dtype=torch.bfloat16, enabled=bf16):
            out = self.flow.sample(mel, refs, noise.shape[1], steps, lookahead, noise=noise, guidance=self.guidance)
        return out.float()

    @torch.no_grad()
    def poses(self, audio, steps=6, seed=0, lookahead=-1, context=CONTEXT, batch=64, group=1):
        """Lips poses (T, 12) for 16 kHz audio (T * 640 samples, T = ceil): offline when lookahead < 0,
        else streaming with `lookahead` frames of future audio and `context` frames of past, `group`
        frames from each window (as stream.py --pose_frames samples them)."""
        if self.ref_poses is None:
            raise RuntimeError("call set_reference() first")
        audio = torch.as_tensor(audio, dtype=torch.float32)
        n = -(-audio.shape[-1] // 640)
        mel = log_mel(audio)                                          # (4T, 80)
        if lookahead < 0:
            return self._offline(mel, n, steps, seed)
        if group < 1:
            raise UserError(f"--pose_frames={group}: give 1 or more")
        firsts = list(range(0, n, group))
        out = []
        for i in range(0, len(firsts), batch):
            end = i + batch if self.fast else min(i + batch, len(firsts))   # fast: the last batch padded, one shape
            ts = [firsts[min(j, len(firsts) - 1)] for j in range(i, end)]
            out.append(self.pose_windows(mel, ts, steps, seed, lookahead, context, group=group))
        return torch.cat(out)[:n]

    def pose_windows(self, mel, firsts, steps, seed, lookahead, context, mel_start=0, group=1):
        """Streaming poses of frames t .. t + group - 1 for each t in `firsts`, each group from one window
        -> (len(firsts) * group, 12).

        The window of first frame t is frames t - context .. t + group - 1 + lookahead; mel (which begins
        at video frame mel_start) must reach frame t + group - 1 + lookahead + MEL_REACH: what a live
        stream must have heard before emitting frame t. Attention masks give every frame in the window
        the same `lookahead`, so a group costs one window, not `group` of them (the earlier frames of a
        group see a little further through the stacked layers, as frames inside training windows do).
        """
        w = context + group + lookahead
        starts = [t - context for t in firsts]
        mels = torch.stack([mel_span(mel, s - mel_start, w + MEL_REACH) for s in starts]).to(self.device)
        noise = torch.stack([frame_noise(seed, s, w) for s in starts]).to(self.device)
        out = self.stream_sample(mels, noise, steps, lookahead)[:, context:context + group]   # (B, group, 12)
        return out.reshape(-1, out.shape[-1]).clone().cpu()

    def _offline(self, mel, n, steps, seed):
        """Full-context windows of the training length, overlapping by a quarter, cross-faded."""
        w = min(self.seq_len, n)
        hop = max(1, (3 * w) // 4)
        starts = list(range(0, max(n - w, 0) + 1, hop))
        if starts[-1] + w < n:
            starts.append(n - w)
        total, weight = torch.zeros(n, 12), torch.zeros(n, 1)
        ramp = torch.minimum(torch.arange(1, w + 1), torch.arange(w, 0, -1)).float()[:, None]   # (w, 1) triangle
        for i in range(0, len(starts), 16):
            chunk = starts[i:i + 16]
            mels = torch.stack([mel_span(mel, s, w + MEL_REACH) for s in chunk]).to(self.device)
            noise = torch.stack([frame_noise(seed, s, w) for s in chunk]).to(self.device)
            out = self._sample(mels, noise, steps, -1).cpu()
            for s, p in zip(chunk, out):
                total[s:s + w] += p * ramp
                weight[s:s + w] += ramp
        return total / weight

    def _step(self, crops, poses, ref_feat, recon=False):
        """The whole per-frame function: uint8 crops (B, R, R, 3), poses (B, 12) -> uint8 (B, R, R, 3);
        with recon, also the crops through the autoencoder alone, decoded in the same call -> (2B, R, R, 3)."""
        with torch.autocast("cuda" if self.cuda else "cpu", dtype=torch.bfloat16, enabled=self.bf16):
            x = to_float(crops)
            z_in, mask = self.base.encode_target(x, self.masked)         # channels_last in memory
            z = self.net(z_in, mask, None, poses, refs=ref_feat.to(z_in.dtype))
            if recon:
                z = torch.cat([z, self.ae.encode(x) if self.masked else z_in])
            return to_uint8(self.ae.decode(z).float())

    @torch.no_grad()
    def edit(self, crops, poses, recon=False):
        """Edit uint8 face crops (B, R, R, 3) to the lips poses (B, 12) -> uint8 (B, R, R, 3) on the CPU;
        recon=True: (edited, the crops through the autoencoder without an edit)."""
        if self.ref_feat is None:
            raise RuntimeError("call set_reference() first")
        crops = torch.as_tensor(crops).to(self.device)
        poses = torch.as_tensor(poses, dtype=torch.float32).to(self.device)
        n = len(crops)
        if not self.fast:
            out = self.step(crops, poses, self.ref_feat, recon).cpu()
            return (out[:n], out[n:]) if recon else out
        # standard strides: a view (a crop with a size-1 axis added by numpy, a pose sliced from a batch)
        # has others, which fail the compiled step's guards and recompile it (~10 s) in the middle of a stream
        crops, poses = (t.clone(memory_format=torch.contiguous_format) for t in (crops, poses))
        edited, recons = [], []
        for i in range(0, n, self.batch):                               # static shapes: pad the last chunk
            c, p = crops[i:i + self.batch], poses[i:i + self.batch]
            k = len(c)
            if k < self.batch:
                c = torch.cat([c, c[-1:].expand(self.batch - k, -1, -1, -1)])
                p = torch.cat([p, p[-1:].expand(self.batch - k, -1)])
            o = self.step(c, p, self.ref_feat, recon)
            edited.append(o[:k].clone().cpu())                          # copied before the next replay
            recons.append(o[self.batch:self.batch + k].clone().cpu())
        return (torch.cat(edited), torch.cat(recons)) if recon else torch.cat(edited)

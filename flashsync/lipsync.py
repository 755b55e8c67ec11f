"""FlashLips inference: driving audio -> lips poses -> edited face crops (DESIGN.md §4, §7).

One object serves sample.py, stream.py and the evaluation, so they compute the same thing:

    lips = LipSync.load("out/refine/ckpt.pt", "out/pose/ckpt.pt")
    lips.set_reference(crops)             # (K, R, R, 3) uint8 frames of the source video
    p = lips.poses(audio)                 # (T, 12): offline, overlapping windows blended
    p = lips.poses(audio, lookahead=2)    # streaming: frame t sees audio up to frame t + 2 (+ mel reach)
    out = lips.edit(crops, p[:B])         # (B, R, R, 3) uint8 -> (B, R, R, 3) uint8

Noise. The flow starts every frame from its own Gaussian noise, drawn from a
seed and the frame's index alone (blocks of 256 frames), so overlapping
windows, batches and a live stream all start a frame from the same noise, and a
streamed result equals the offline emulation of the same stream.

Streaming. Pose t is sampled on a window of `context` past frames, frame t and
`lookahead` future frames (audio features 2 frames further, which the mel
convolutions reach). Before the first frame the window holds silence and zero
noise, so every window has the same static shape.
"""
import torch

from flashsync.audio import MELS_PER_FRAME, SILENCE, log_mel
from flashsync.checkpoint import load_checkpoint, load_model
from flashsync.nn import to_float, to_uint8
from flashsync.pose import euler
from flashsync.util import UserError

NOISE_BLOCK = 256
MEL_REACH = 2          # video frames of audio beyond a window that its last frame's features see


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


class LipSync:
    """A trained editor (mask-free `refine`, or the masked `editor`) driven by a trained pose model."""

    def __init__(self, editor, pose, seq_len=50, device="cpu"):
        self.masked = not hasattr(editor, "teacher")
        self.base = editor if self.masked else editor.teacher        # holds the autoencoder and lips encoder
        self.net = editor.net.to(device).eval()
        self.ae = self.base.ae.to(device).eval()
        self.flow = pose.flow.to(device).eval()
        self.seq_len = seq_len
        self.device = device
        self.resolution = self.base.cfg.resolution
        self.z_refs = self.ref_poses = None

    @classmethod
    def load(cls, editor_path, pose_path, device="cpu"):
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
        return cls(editor, pose, pose_ckpt["config"]["seq_len"], device)

    @torch.no_grad()
    def set_reference(self, crops):
        """K uint8 crops (K, R, R, 3) of the source video: the editor's references and the speaker's style."""
        refs = torch.as_tensor(crops).to(self.device)
        if refs.shape[1:] != (self.resolution, self.resolution, 3):
            raise ValueError(f"reference crops must be ({self.resolution}, {self.resolution}, 3), got {tuple(refs.shape[1:])}")
        x = to_float(refs)                                            # (K, 3, R, R)
        self.z_refs = self.ae.encode(x)[None]                         # (1, K, 4, h, w)
        self.ref_poses = self.base.lips(x)[None]                      # (1, K, 12)

    @torch.no_grad()
    def _sample(self, mel, noise, steps, lookahead):
        """Batched flow sampling: mel (B, 4(n + 2), 80), noise (B, n, 12) -> raw poses (B, n, 12)."""
        f = self.flow
        b = mel.shape[0]
        r = ((self.ref_poses - f.mean) / f.std).expand(b, -1, -1)
        x = euler(lambda x, t: f.velocity(x, t.expand(b), mel, r, lookahead), noise, steps)
        return x * f.std + f.mean

    @torch.no_grad()
    def poses(self, audio, steps=6, seed=0, lookahead=-1, context=24, batch=64):
        """Lips poses (T, 12) for 16 kHz audio (T * 640 samples, T = ceil): offline when lookahead < 0,
        else streaming with `lookahead` frames of future audio and `context` frames of past."""
        if self.ref_poses is None:
            raise RuntimeError("call set_reference() first")
        audio = torch.as_tensor(audio, dtype=torch.float32)
        n = -(-audio.shape[-1] // 640)
        mel = log_mel(audio)                                          # (4T, 80)
        if lookahead < 0:
            return self._offline(mel, n, steps, seed)
        out = []
        for t0 in range(0, n, batch):
            ts = range(t0, min(t0 + batch, n))
            out.append(self.pose_windows(mel, list(ts), steps, seed, lookahead, context))
        return torch.cat(out)

    def pose_windows(self, mel, frames, steps, seed, lookahead, context):
        """Streaming poses of the given frame indices (each from its own window) -> (len(frames), 12).

        The window of frame t is frames t - context .. t + lookahead; mel must reach frame
        t + lookahead + MEL_REACH (what a live stream must have heard before emitting frame t).
        """
        w = context + 1 + lookahead
        starts = [t - context for t in frames]
        mels = torch.stack([mel_span(mel, s, w + MEL_REACH) for s in starts]).to(self.device)
        noise = torch.stack([frame_noise(seed, s, w) for s in starts]).to(self.device)
        return self._sample(mels, noise, steps, lookahead)[:, context].cpu()

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

    @torch.no_grad()
    def edit(self, crops, poses):
        """Edit uint8 face crops (B, R, R, 3) to the lips poses (B, 12) -> uint8 (B, R, R, 3)."""
        if self.z_refs is None:
            raise RuntimeError("call set_reference() first")
        x = to_float(torch.as_tensor(crops).to(self.device))         # (B, 3, R, R)
        b = x.shape[0]
        if self.masked:
            z_in = self.ae.encode(x * (1 - self.base.pix_mask))
            mask = self.base.lat_mask.expand(b, -1, -1, -1)
        else:
            z_in = self.ae.encode(x)
            mask = torch.zeros_like(z_in[:, :1])
        z = self.net(z_in, mask, self.z_refs.expand(b, -1, -1, -1, -1), poses.to(self.device))
        return to_uint8(self.ae.decode(z).clamp(-1, 1)).cpu()

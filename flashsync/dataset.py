"""The on-disk clip format and a training Dataset that reads it lazily.

    <root>/index.json            {"format": "flashsync-clips", "version": 1, "resolution": R,
                                  "fps": 25, "sample_rate": 16000,
                                  "clips": [{"name", "split", "frames", "source"}, ...]}
    <root>/clips/<name>/frames.npy    (T, R, R, 3) uint8 face crops (np.load(..., mmap_mode="r"))
    <root>/clips/<name>/audio.wav     16 kHz mono 16-bit PCM, exactly T * 640 samples
    <root>/clips/<name>/meta.json     source, fps, resolution, frames, boxes (real videos),
                                      ground truth per frame (SynthTalk)
    <root>/clips/<name>/occluder.npy  (T, R, R) bool occluder mask (SynthTalk clips with one)

Every clip directory and the index are written atomically, so an interrupted
run never leaves a clip that looks complete but is not.
"""
import json
import os

import numpy as np
import soundfile as sf
import torch

from flashsync import FPS, SR, SAMPLES_PER_FRAME
from flashsync.audio import save_audio
from flashsync.phonemes import LAUGH, SIGH
from flashsync.util import UserError, atomic_path

FORMAT, VERSION = "flashsync-clips", 1
# SynthTalk's per-frame truth that training windows carry: dtype, and the value where a clip has none
TRACKS = {"phoneme": (np.int64, -1), "label": (np.int64, -1), "valence": (np.float32, np.nan),
          "arousal": (np.float32, np.nan)}


def dump_json(path, obj):
    """Write JSON atomically (compact)."""
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, separators=(",", ":"))


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return np.round(x, 4).tolist() if x.dtype.kind == "f" else x.tolist()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def write_clip(root, name, frames, audio, meta, occluder=None):
    """Write one clip directory atomically. frames (T, R, R, 3) uint8, audio (T*640,) float."""
    t = len(frames)
    if len(audio) != t * SAMPLES_PER_FRAME:
        raise ValueError(f"audio has {len(audio)} samples, expected {t * SAMPLES_PER_FRAME} for {t} frames")
    with atomic_path(os.path.join(root, "clips", name)) as tmp:
        os.makedirs(tmp)
        np.save(os.path.join(tmp, "frames.npy"), np.ascontiguousarray(frames, dtype=np.uint8))
        save_audio(os.path.join(tmp, "audio.wav"), torch.as_tensor(audio))
        if occluder is not None and occluder.any():
            np.save(os.path.join(tmp, "occluder.npy"), occluder.astype(bool))
        dump_json(os.path.join(tmp, "meta.json"), _jsonable(dict(meta, frames=t, fps=FPS, sample_rate=SR)))


def read_index(root):
    path = os.path.join(root, "index.json")
    if not os.path.exists(path):
        raise UserError(f"no dataset at {root} (missing index.json); make one with `python data.py synth` "
                        f"or `python data.py video ...`")
    with open(path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT or index.get("version", 0) > VERSION:
        raise UserError(f"{path}: not a flashsync dataset of version <= {VERSION}")
    return index


def write_index(root, clips, resolution, merge=True):
    """Write (or merge into) <root>/index.json. clips: list of {name, split, frames, source}."""
    old = {}
    if merge and os.path.exists(os.path.join(root, "index.json")):
        index = read_index(root)
        if index["resolution"] != resolution:
            raise UserError(f"{root} holds {index['resolution']}px crops, not {resolution}px; use another --out_dir")
        old = {c["name"]: c for c in index["clips"]}
    old.update({c["name"]: c for c in clips})
    dump_json(os.path.join(root, "index.json"), dict(format=FORMAT, version=VERSION, resolution=resolution,
                                                      fps=FPS, sample_rate=SR, clips=sorted(old.values(), key=lambda c: c["name"])))


def split_clips(root, split):
    """(crop resolution, index entries of the clips in `split`) of a dataset."""
    index = read_index(root)
    clips = [c for c in index["clips"] if c["split"] == split]
    if not clips:
        raise UserError(f"{root}: no clips in split {split!r}")
    return index["resolution"], clips


def load_clip(root, name):
    """A whole clip: frames (memory-mapped), audio (T*640,) float32, meta dict, occluder or None."""
    d = os.path.join(root, "clips", name)
    frames = np.load(os.path.join(d, "frames.npy"), mmap_mode="r")
    audio, _ = sf.read(os.path.join(d, "audio.wav"), dtype="float32")
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    occ = os.path.join(d, "occluder.npy")
    return frames, audio, meta, (np.load(occ, mmap_mode="r") if os.path.exists(occ) else None)


class ClipDataset(torch.utils.data.Dataset):
    """Windows of `length` consecutive frames (every `stride` frames) from the clips of one split.

    Item: dict(video (length, R, R, 3) uint8, audio (length*640,) float32, start, clip) plus
    the per-frame ground truth of the window when the clip has it. Nothing is loaded
    up front: frames are memory-mapped and audio is read by sample range.
    """

    def __init__(self, root, split="train", length=1, stride=1):
        self.root, self.length = root, length
        self.resolution, self.clips = split_clips(root, split)
        self.items = [(i, s) for i, c in enumerate(self.clips) for s in range(0, c["frames"] - length + 1, stride)]
        self._frames, self._meta = {}, {}

    def __len__(self):
        return len(self.items)

    def _open(self, i):
        if i not in self._frames:   # opened lazily, per worker process
            name = self.clips[i]["name"]
            d = os.path.join(self.root, "clips", name)
            self._frames[i] = np.load(os.path.join(d, "frames.npy"), mmap_mode="r")
            with open(os.path.join(d, "meta.json")) as f:
                self._meta[i] = json.load(f)
        return self._frames[i], self._meta[i]

    def __getitem__(self, k):
        i, s = self.items[k]
        frames, meta = self._open(i)
        n = self.length
        path = os.path.join(self.root, "clips", self.clips[i]["name"], "audio.wav")
        audio, _ = sf.read(path, start=s * SAMPLES_PER_FRAME, stop=(s + n) * SAMPLES_PER_FRAME, dtype="float32")
        item = dict(video=torch.from_numpy(np.array(frames[s:s + n])), audio=torch.from_numpy(audio), start=s, clip=i)
        for key, value in meta.get("gt", {}).items():
            item[key] = torch.tensor(value[s:s + n])
        return item


def _meta(root, name):
    with open(os.path.join(root, "clips", name, "meta.json")) as fh:
        return json.load(fh)


class FrameSampler:
    """Random training batches of frames with K reference frames from the same clip.

    batch(n, generator) -> dict(target (n, R, R, 3) uint8, refs (n / group, K, R, R, 3) uint8,
    other (n, R, R, 3) uint8: another frame of the same clip, clip (n,), frame (n,)).
    `group` targets come from each clip drawn and share its K references (which avoid every
    target's +-gap frames, so no mouth can be copied from them): a batch encodes n / group
    reference sets instead of n, the costliest part of an editor step.
    With length L > 1 also video (n, L, R, R, 3) uint8 and audio (n, L*640) float32 of
    the L-frame window that holds the target, and SynthTalk's per-frame truth where the clip has
    it: phoneme and label (n, L) int64 (the phoneme id; silence / speech / laugh / sigh), -1 for
    clips without ground truth such as real videos; valence and arousal (n, L) float32, NaN
    there. Always occluder
    (n, L, R, R) bool: the window's occluder masks (the target's, L = 1; all False for clips
    without one). gap=L keeps references out of the window. occluded: the fraction of targets
    drawn from frames that show an occluder (for the occlusion segmenter). nsv: the fraction of
    windows drawn around a laugh or a sigh frame (KeyFace drew sighs as laughs when they came only as
    often as the clips hold them; L > 1). other_clip: the references
    come from another clip of the same person (meta.json's "identity") where there is one, so they
    share the person but not the clip's expression (KeyFace: the emotion must come from its condition).
    features: a function of uint8 frames (N, R, R, 3) -> (N, ...) computed once per clip at the start
    (say, a frozen lips encoder or autoencoder); then the windows come as video_features (n, L, ...)
    and refs_features (n, K, ...) instead of pixels; with L = 1 as target_features (n, ...) and
    refs_features (n / group, K, ...) beside the pixels. cache: a file that keeps them for the next run
    (its name must say which frozen model made them). pixels: the windows' frames as video too, beside
    their features.
    All randomness comes from the torch.Generator passed in, so saving its state
    saves the data position (exact resume).
    """

    def __init__(self, root, split="train", refs=4, length=1, group=1, features=None, gap=2, cache="", occluded=0.0,
                 other_clip=False, pixels=False, nsv=0.0):
        self.root, self.refs, self.length, self.group, self.gap = root, refs, length, group, gap
        self.pixels = pixels
        self.occluded, self.nsv = occluded, nsv
        self.resolution, self.clips = split_clips(root, split)
        self.frames = [np.load(os.path.join(root, "clips", c["name"], "frames.npy"), mmap_mode="r") for c in self.clips]
        self.occluders = [np.load(p, mmap_mode="r") if os.path.exists(p) else None for p in
                          (os.path.join(root, "clips", c["name"], "occluder.npy") for c in self.clips)]
        # frames that show an occluder, per clip: `occluded` of the targets come from them (a rare class)
        self.shown = [np.nonzero(np.asarray(o).reshape(len(o), -1).any(1))[0] if o is not None and occluded > 0
                      else np.zeros(0, int) for o in self.occluders]
        self.siblings = [[] for _ in self.clips]         # per clip: the other clips of its person
        if other_clip:
            person = [_meta(root, c["name"]).get("identity", c["name"]) for c in self.clips]
            self.siblings = [[j for j, q in enumerate(person) if q == p and j != i] for i, p in enumerate(person)]
        self.tracks = {}
        if length > 1:                                   # the truth, frame by frame, where it is known
            self.tracks = {k: [] for k in TRACKS}
            for c, f in zip(self.clips, self.frames):
                gt = _meta(root, c["name"]).get("gt", {})
                for k, (dtype, missing) in TRACKS.items():
                    self.tracks[k].append(np.asarray(gt.get(k, np.full(len(f), missing)), dtype))
        if nsv > 0:                                      # frames in a laugh or a sigh, per clip (none without labels)
            self.shown = [np.nonzero((lab == LAUGH) | (lab == SIGH))[0] for lab in self.tracks["label"]] \
                if self.tracks else [np.zeros(0, int) for _ in self.clips]
        self.features = None
        if features is not None and cache and os.path.exists(cache):
            # memory-mapped: the processes of a node share its pages. A file of another clip list (the
            # dataset grew since) does not fit: made anew
            self.features = torch.load(cache, weights_only=True, mmap=True)
            if [len(f) for f in self.features] != [len(f) for f in self.frames]:
                self.features = None
        if features is not None and self.features is None:
            with torch.no_grad():                        # float16 with a cache: half the RAM and the file
                self.features = [torch.cat([features(torch.from_numpy(np.array(f[i:i + 256])))
                                            for i in range(0, len(f), 256)]).to(torch.half if cache else torch.float)
                                 for f in self.frames]
            if cache:
                with atomic_path(cache, suffix=".pt") as tmp:
                    torch.save(self.features, tmp)

    def batch(self, n, generator):
        g = self.group
        if n % g:
            raise ValueError(f"batch size {n} is not a multiple of the group size {g}")
        clips = torch.randint(len(self.clips), (n // g,), generator=generator).tolist()
        u = torch.rand(n // g, g + self.refs + g, generator=generator)
        target, refs, other, clip, frame, video, audio, feat, ref_feat, occ = ([] for _ in range(10))
        tracks = {k: [] for k in self.tracks}
        rare = self.occluded or self.nsv
        forced = [False] * len(clips)
        if rare > 0:                                     # some targets on rare frames: an occluder, a laugh or a sigh
            having = [i for i, s in enumerate(self.shown) if len(s)]
            pick, which = torch.rand(n // g, generator=generator), torch.randint(1 << 30, (n // g,), generator=generator)
            forced = [p < rare and bool(having) for p in pick.tolist()]
            clips = [having[w % len(having)] if f else c for c, f, w in zip(clips, forced, which.tolist())]
            # an NSV window starts up to L frames before its laugh or sigh frame, so it holds onsets too
            shift = torch.rand(n // g, g, generator=generator) if self.nsv > 0 else None
        for k, c in enumerate(clips):
            f = self.frames[c]
            ts = [min(int(v * len(f)), len(f) - 1) for v in u[k, :g].tolist()]
            if rare > 0 and len(self.shown[c]) and (self.occluded > 0 or forced[k]):
                ts = [int(self.shown[c][min(int(v * len(self.shown[c])), len(self.shown[c]) - 1)])
                      for v in u[k, :g].tolist()]
                if shift is not None:
                    ts = [max(0, t - int(h * self.length)) for t, h in zip(ts, shift[k].tolist())]
            # references and `other` avoid the targets' +-gap frames, so a mouth cannot be copied from them
            free = [i for i in range(len(f)) if all(abs(i - t) > self.gap for t in ts)] or list(range(len(f)))
            pick = lambda v: free[min(int(v * len(free)), len(free) - 1)]
            rs = sorted(pick(v) for v in u[k, g:g + self.refs].tolist())
            rc = c
            if self.siblings[c]:                         # the same person in another clip: any of its frames
                rc = self.siblings[c][int(u[k, g] * len(self.siblings[c])) % len(self.siblings[c])]
                rs = sorted(min(int(v * len(self.frames[rc])), len(self.frames[rc]) - 1)
                            for v in u[k, g:g + self.refs].tolist())
            refs.append(self.frames[rc][rs])
            if self.features is not None:
                ref_feat.append(self.features[rc][rs])
            for j, t in enumerate(ts):
                clip.append(c)
                frame.append(t)
                target.append(f[t])
                other.append(f[pick(float(u[k, g + self.refs + j]))])
                s = max(0, min(t, len(f) - self.length))        # the window holding the target
                o = self.occluders[c]
                occ.append(np.zeros((self.length, *f.shape[1:3]), bool) if o is None else o[s:s + self.length])
                if self.length == 1 and self.features is not None:
                    feat.append(self.features[c][t])
                if self.length > 1:
                    for k, v in tracks.items():
                        v.append(self.tracks[k][c][s:s + self.length])
                    if self.features is not None:
                        feat.append(self.features[c][s:s + self.length])
                    if self.features is None or self.pixels:
                        video.append(f[s:s + self.length])
                    path = os.path.join(self.root, "clips", self.clips[c]["name"], "audio.wav")
                    audio.append(sf.read(path, start=s * SAMPLES_PER_FRAME, stop=(s + self.length) * SAMPLES_PER_FRAME,
                                         dtype="float32")[0])
        out = dict(target=torch.from_numpy(np.stack(target)), refs=torch.from_numpy(np.stack(refs)),
                   other=torch.from_numpy(np.stack(other)), clip=torch.tensor(clip), frame=torch.tensor(frame),
                   occluder=torch.from_numpy(np.stack(occ)))
        if self.length == 1 and self.features is not None:       # the frames' latents (the editor's cache)
            out.update(target_features=torch.stack(feat).float(), refs_features=torch.stack(ref_feat).float())
        if self.length > 1:
            out.update(audio=torch.from_numpy(np.stack(audio)), **{k: torch.from_numpy(np.stack(v)) for k, v in tracks.items()})
            if self.features is not None:
                out.update(video_features=torch.stack(feat).float(),
                           refs_features=torch.stack(ref_feat).repeat_interleave(g, 0).float())
            if video:
                out.update(video=torch.from_numpy(np.stack(video)))
        return out

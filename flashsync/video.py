"""Video: streaming decode at a constant 25 fps, an atomic h264 + AAC mp4 writer, PNG output.

Decoding is a generator, so memory stays bounded whatever the video's length.
Frames are resampled to 25 fps by their timestamps: output frame k (time
t0 + k/25) is the source frame whose timestamp is nearest, which drops or repeats
frames as needed and handles variable frame rate.
"""
import dataclasses
import struct
import zlib

import av
import numpy as np
import torch

from flashsync import FPS, SR
from flashsync.util import UserError, atomic_path, check_file


@dataclasses.dataclass
class VideoInfo:
    width: int
    height: int
    duration: float      # seconds
    frames: int          # frames at 25 fps
    has_audio: bool
    start: float = 0.0   # timestamp of the first frame (frame k of the 25 fps grid is at start + k/25)


def _open(path):
    check_file(path, "video file")
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: not a video file av can read ({e.strerror or e})") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path} has no video stream")
    return container


def _times(path, seek=None):
    """Yield (time in seconds, av.VideoFrame) for each decoded frame of the first video stream,
    from the keyframe at or before time `seek` when it is given."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or FPS)
        try:
            if seek is not None and stream.time_base:
                container.seek(max(0, int(seek / stream.time_base)), stream=stream, backward=True)
            for i, frame in enumerate(container.decode(stream)):
                yield (frame.time if frame.time is not None else i / rate), frame
        except av.error.FFmpegError as e:
            raise UserError(f"{path}: video is damaged or truncated ({e.strerror or e})") from None


def probe(path):
    """Size, duration and 25 fps frame count of a video (reads timestamps only, no decode of pixels)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        width, height = stream.codec_context.width, stream.codec_context.height
        times = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    times.append(float(packet.pts * packet.time_base))
        except av.error.FFmpegError as e:
            raise UserError(f"{path}: video is damaged or truncated ({e.strerror or e})") from None
    if not times:
        raise UserError(f"{path}: the video stream has no frames")
    times.sort()
    duration = times[-1] - times[0] + _last_interval(times)
    return VideoInfo(width, height, duration, max(1, round(duration * FPS)), has_audio, times[0])


def _last_interval(times):
    """How long the last frame lasts: the median gap between frames, or one 25 fps frame."""
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if len(gaps) else 1.0 / FPS


def read_frames(path, start=0, info=None, lazy=False):
    """Yield the video's frames as (H, W, 3) uint8 RGB arrays at exactly 25 fps, from frame `start` on.

    start > 0 seeks (to a keyframe half a second early, then decodes forward), so
    reading any stretch costs about its own length; `info` (from probe) saves a probe.
    lazy: yield [time, frame] entries instead, for rgb() to convert when needed, and None for each
    frame decoded without an entry to show for it (before `start`), so a caller can pace the decoding.
    """
    out = (lambda e: e) if lazy else rgb
    seek = None
    if start > 0:
        info = info or probe(path)
        seek = info.start + start / FPS - 0.5
    k, t0, prev, times = 0, None if seek is None else info.start, None, []
    for t, frame in _times(path, seek):
        shown = False
        if prev is None:
            t0 = t if t0 is None else t0
            k = max(0, int((t - t0) * FPS))   # after a seek: the first grid frame this one can own
        else:
            # every output time before the midpoint of prev and this frame belongs to prev
            while t0 + k / FPS < (prev[0] + t) / 2:
                if k >= start:
                    yield out(prev)
                    shown = True
                k += 1
        if lazy and not shown:
            yield None
        prev = [t, frame]                 # converted to RGB only if yielded: a seek decodes frames it skips
        times.append(t)
    if prev is None:
        raise UserError(f"{path}: the video stream has no frames")
    n = info.frames if info is not None else max(1, round((times[-1] - t0 + _last_interval(times)) * FPS))
    while k < n:
        if k >= start:
            yield out(prev)
        k += 1


def rgb(entry):
    """[time, av.VideoFrame or its array] -> the (H, W, 3) uint8 array, converted once."""
    if not isinstance(entry[1], np.ndarray):
        entry[1] = entry[1].to_ndarray(format="rgb24")
    return entry[1]


def bounce(n, n_out):
    """Source frame indices of n_out output frames from n: 0 .. n-1, n-2 .. 1, 0 .. n-1, ... -> (n_out,) array."""
    if n == 1:
        return np.zeros(n_out, int)
    k = np.arange(n_out) % (2 * n - 2)
    return np.where(k < n, k, 2 * n - 2 - k)


class _Chunk:
    """Frames lo .. hi of a video as [time, frame] entries, decoded a few frames per step(): a seek lands
    on the keyframe before lo, up to hundreds of frames back, and decoding them all at once stalls a
    live stream; spread over the frames played meanwhile, it does not."""

    def __init__(self, path, info, lo, hi):
        self.lo, self.n, self.entries = lo, hi - lo + 1, []
        self.decoding = read_frames(path, lo, info, lazy=True)

    def step(self, k):
        """Decode up to k more frames (k = inf: the rest) -> self."""
        while k > 0 and len(self.entries) < self.n:
            entry = next(self.decoding, False)
            if entry is False:                               # the video ended early: what there is
                self.n = len(self.entries)
            elif entry is not None:
                self.entries.append(entry)
            k -= 1
        return self


def ping_pong(path, info, n_out, memory=256 << 20, pace=3):
    """Yield (source index, frame) for n_out output frames: the video forwards, backwards, forwards, ...

    Backwards runs are read in chunks from the end, each a seek to the keyframe before it and a decode
    forward, so memory holds two chunks (the one played as RGB, the next one decoded; `memory` bytes in
    all, at least 25 frames each), whatever the video's length. The next chunk decodes while the one
    before it plays, `pace` frames per frame played (sample.py and stream.py play what they read at once
    or at 25 fps: the decoding stays even). With keyframes 250 frames apart (x264's default), chunks
    of 25 decoded in one go cost ~5 decodes a frame played back, in bursts: too slow for stream.py at
    576x768. A still repeats.
    """
    chunk = max(25, memory // (9 * info.width * info.height // 2))     # RGB 3 bytes a pixel, decoded 1.5
    n = info.frames
    if n == 1:
        frame = next(read_frames(path))
        for _ in range(n_out):
            yield 0, frame
        return
    spans = [(max(1, hi - chunk + 1), hi) for hi in range(n - 2, 0, -chunk)]        # backwards: n - 2 .. 1
    done = 0
    while done < n_out:
        ahead = None
        for i, frame in zip(range(n), read_frames(path, 0, info)):                   # forwards: 0 .. n - 1
            if spans and i == max(0, n - chunk):
                ahead = _Chunk(path, info, *spans[0])
            yield i, frame
            done += 1
            ahead = ahead and ahead.step(pace)
        for j in range(len(spans)):
            part = (ahead or _Chunk(path, info, *spans[j])).step(float("inf"))
            ahead = _Chunk(path, info, *spans[j + 1]) if j + 1 < len(spans) else None
            while part.entries:
                yield part.lo + len(part.entries) - 1, rgb(part.entries.pop())       # converted as played
                done += 1
                ahead = ahead and ahead.step(pace)
            if done >= n_out:
                return


def rgb_frame(image, reuse=None):
    """(H, W, 3) uint8 -> an rgb24 av.VideoFrame, refilling `reuse` when it fits: av.VideoFrame.from_ndarray
    took 2.1 ms a 576x768 frame on this project's machine (PyAV 18), a plane update 0.04 ms. The caller
    must be done with `reuse` (an encoder converting it to its pixel format is)."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    if reuse is None or (reuse.height, reuse.width) != (h, w):
        reuse = av.VideoFrame(w, h, "rgb24")
    if reuse.planes[0].line_size != 3 * w:                         # rows padded for alignment: let av copy
        return av.VideoFrame.from_ndarray(image, format="rgb24")
    reuse.planes[0].update(image)
    return reuse


class VideoWriter:
    """Write RGB frames (and optional mono audio) to an h264/yuv420p + AAC mp4, atomically.

    with VideoWriter("out.mp4", width, height, audio=wave) as w:
        for frame in frames: w.write(frame)        # (H, W, 3) uint8
    The file appears under its name only when the block ends without error.
    pix_fmt "yuv420p" (default) plays everywhere but halves colour resolution, which
    costs small crops the most (SynthTalk at 64 px: ~33 dB PSNR, at 256 px: ~36.5 dB);
    "yuv444p" keeps full colour (~40+ dB at 64 px) for archives and datasets. Odd
    sizes are padded by one edge row/column for yuv420p, which needs even sizes. The audio
    track is muxed as frames arrive and trimmed or padded with silence to the
    video's length, so the two durations agree.
    """

    def __init__(self, path, width, height, audio=None, crf=18, preset="veryfast", pix_fmt="yuv420p"):
        self.path, self.width, self.height, self.pix_fmt = path, width, height, pix_fmt
        self.pad = (height % 2, width % 2) if pix_fmt == "yuv420p" else (0, 0)
        self.audio = None if audio is None else torch.as_tensor(audio, dtype=torch.float32).reshape(-1).numpy()
        self.crf, self.preset = crf, preset
        self.frames = 0
        self.samples = 0   # audio samples muxed so far

    def __enter__(self):
        self._atomic = atomic_path(self.path, suffix=".mp4")
        tmp = self._atomic.__enter__()
        self.container = av.open(tmp, "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=FPS)
        self.stream.width, self.stream.height = self.width + self.pad[1], self.height + self.pad[0]
        self.stream.pix_fmt = self.pix_fmt
        self.stream.options = {"crf": str(self.crf), "preset": self.preset}
        self.astream = None
        if self.audio is not None:
            self.astream = self.container.add_stream("aac", rate=SR)
            self.astream.layout = "mono"
        return self

    def write(self, frame):
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected ({self.height}, {self.width}, 3) uint8, got {frame.shape} {frame.dtype}")
        if any(self.pad):
            frame = np.pad(frame, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        self._rgb = vf = rgb_frame(frame, getattr(self, "_rgb", None))   # the encoder converts it to a new frame
        vf.pts = self.frames
        self.container.mux(self.stream.encode(vf))
        self.frames += 1
        self._mux_audio(self.frames * SR // FPS)

    def _mux_audio(self, until):
        if self.astream is None or until <= self.samples:
            return
        chunk = self.audio[:until - self.samples]                       # self.audio: what is not muxed yet
        self.audio = self.audio[len(chunk):]
        chunk = np.pad(chunk, (0, until - self.samples - len(chunk)))   # silence past the audio's end
        af = av.AudioFrame.from_ndarray(chunk[None].astype(np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = SR, self.samples
        self.container.mux(self.astream.encode(af))
        self.samples = until

    def add_audio(self, chunk):
        """Append live audio (mono float at 16 kHz) to the track of a writer made with audio=[]."""
        self.audio = np.concatenate([self.audio, np.asarray(chunk, np.float32).reshape(-1)])

    def __exit__(self, kind, value, tb):
        if kind is None:
            try:
                if self.frames == 0:
                    raise UserError(f"{self.path}: no frames to write")
                self.container.mux(self.stream.encode(None))       # flush the encoders
                if self.astream is not None:
                    self.container.mux(self.astream.encode(None))
            except BaseException as e:
                self.container.close()
                self._atomic.__exit__(type(e), e, e.__traceback__)  # removes the temporary file
                raise
        self.container.close()
        self._atomic.__exit__(kind, value, tb)                   # rename on success, remove on error
        return False


def write_png(path, image):
    """Write an (H, W, 3) uint8 RGB image as PNG (zlib only), atomically."""
    image = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    h, w = image.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1)  # filter byte 0 per row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
    with atomic_path(path, suffix=".png") as tmp:
        with open(tmp, "wb") as f:
            f.write(png)

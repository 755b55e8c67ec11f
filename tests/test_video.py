import fractions
import itertools

import av
import numpy as np
import pytest
import torch

from flashsync import synth
from flashsync.audio import load_audio
from flashsync.util import UserError
from flashsync.video import VideoWriter, bounce, ping_pong, probe, read_frames, rgb_frame, write_png


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def clip():
    return synth.make_clip(11, 0, seconds=2.0, res=256)


def test_round_trip_quality_duration_and_audio(tmp_path, clip):
    path = str(tmp_path / "rt.mp4")
    with VideoWriter(path, 256, 256, audio=clip["audio"]) as w:       # default quality: crf 18, yuv420p
        for f in clip["video"]:
            w.write(f)
    back = np.stack(list(read_frames(path)))
    assert back.shape == clip["video"].shape
    assert psnr(back, clip["video"]) > 35
    info = probe(path)
    assert info.frames == 50 and abs(info.duration - 2.0) < 1e-6 and info.has_audio
    sound = load_audio(path)
    assert abs(len(sound) - len(clip["audio"])) <= 640        # within one video frame
    with av.open(path) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.video[0].codec_context.name == "h264"


def test_small_crops_keep_full_colour_with_yuv444(tmp_path):
    small = synth.make_clip(11, 0, seconds=0.4, res=64)["video"]
    path = str(tmp_path / "small.mp4")
    with VideoWriter(path, 64, 64, pix_fmt="yuv444p") as w:
        for f in small:
            w.write(f)
    assert psnr(np.stack(list(read_frames(path))), small) > 35


def test_odd_size_is_padded_to_even(tmp_path):
    path = str(tmp_path / "odd.mp4")
    frame = np.full((33, 47, 3), 128, np.uint8)
    with VideoWriter(path, 47, 33) as w:
        for _ in range(5):
            w.write(frame)
    info = probe(path)
    assert (info.width, info.height) == (48, 34) and info.frames == 5 and not info.has_audio


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(str(path), 64, 64) as w:
            w.write(np.zeros((64, 64, 3), np.uint8))
            raise RuntimeError("crash in the middle")
    assert list(tmp_path.iterdir()) == []


def write_vfr(path, times, size=32):
    """An mp4 whose frame k shows the value 4*k and is shown at times[k] seconds (variable rate)."""
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=1000)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = fractions.Fraction(1, 1000)
        s.options = {"crf": "10"}
        for k, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((size, size, 3), 4 * k, np.uint8), format="rgb24")
            f.pts = int(round(t * 1000))
            f.time_base = fractions.Fraction(1, 1000)
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def test_variable_frame_rate_comes_out_at_25fps(tmp_path):
    # 1 s at 10 fps, then 1 s at 50 fps: 2 s in all
    times = [i / 10 for i in range(10)] + [1.0 + i / 50 for i in range(50)]
    path = str(tmp_path / "vfr.mp4")
    write_vfr(path, times)
    frames = list(read_frames(path))
    assert probe(path).frames == len(frames)
    assert len(frames) == 50
    values = [int(round(f[..., 0].mean() / 4)) for f in frames]
    # each output frame shows the source frame nearest in time
    for k, v in enumerate(values):
        t = k / 25
        nearest = int(np.argmin([abs(t - s) for s in times]))
        assert abs(v - nearest) <= 1
    # reading from a frame index on (seeking, as sample.py does to play a video backwards) gives the same frames
    info = probe(path)
    for start in (1, 7, 24, 25, 49):
        part = list(read_frames(path, start, info))
        assert len(part) == 50 - start
        assert all(np.array_equal(a, b) for a, b in zip(part, frames[start:]))


def test_bad_video_inputs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        probe(str(tmp_path / "missing.mp4"))
    (tmp_path / "text.mp4").write_text("hello, I am not a video\n" * 10)
    with pytest.raises(UserError, match="not a video file av can read"):
        probe(str(tmp_path / "text.mp4"))
    import soundfile as sf
    sf.write(tmp_path / "sound.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(UserError, match="has no video stream"):
        list(read_frames(str(tmp_path / "sound.wav")))


def test_png(tmp_path):
    img = (np.random.default_rng(0).random((10, 13, 3)) * 255).astype(np.uint8)
    write_png(str(tmp_path / "a.png"), img)
    back = next(read_frames(str(tmp_path / "a.png")))       # av reads images as one-frame videos
    assert np.array_equal(back, img)


def test_real_video(media):
    info = probe(f"{media}/sun.mp4")
    assert (info.width, info.height, info.frames, info.has_audio) == (576, 768, 550, False)


def test_ping_pong_plays_back_and_forth_in_bounded_chunks(tmp_path):
    """The video forwards, then backwards in chunks (each a seek to the keyframe before it, decoded
    forward, converted to RGB as played), then forwards again: the frames and their indices are those of
    one forward read, in ping-pong order, however small the memory budget (25-frame chunks here)."""
    path = str(tmp_path / "pp.mp4")
    with VideoWriter(path, 32, 32, pix_fmt="yuv444p") as w:
        for k in range(60):
            w.write(np.full((32, 32, 3), 4 * k, np.uint8))
    info = probe(path)
    forward = list(read_frames(path, 0, info))
    got = list(itertools.islice(ping_pong(path, info, 150, memory=1), 150))   # 60 on, 58 back (3 chunks), 32 on
    want = bounce(60, 150)
    assert [i for i, _ in got] == list(want)
    assert all(np.array_equal(f, forward[i]) for i, f in got)


def test_rgb_frame_refills_a_frame_when_it_fits():
    """video.rgb_frame: a reused av.VideoFrame holds exactly the new image, also at sizes whose rows
    av pads (where it falls back to a fresh frame)."""
    g = np.random.default_rng(0)
    for h, w in ((48, 64), (7, 5), (31, 33)):
        first, second = (g.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
        frame = rgb_frame(first)
        again = rgb_frame(second, frame)
        assert np.array_equal(again.to_ndarray(format="rgb24"), second)
        assert (again is frame) == (frame.planes[0].line_size == 3 * w)

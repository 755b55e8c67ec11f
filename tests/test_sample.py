import itertools
import os

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_script
from flashsync import face, synth
from flashsync.audio import load_audio, resample
from flashsync.lipsync import LipSync, frame_noise
from flashsync.video import VideoWriter, probe, read_frames, write_png

BOX = (16, 8, 96, 96)                  # the face in the 128 x 112 test frames


def source_video(path, seconds=1.0):
    """A SynthTalk face at 96 px inside a 128 x 112 frame (grey border), with its own audio."""
    clip = synth.make_clip(9, 0, seconds=seconds, res=96)
    frames = np.full((len(clip["video"]), 112, 128, 3), 90, np.uint8)
    frames[:, 8:104, 16:112] = clip["video"]
    with VideoWriter(path, 128, 112, audio=clip["audio"]) as w:
        for f in frames:
            w.write(f)
    return frames


def outside_diff(a, b, box):
    """Mean and 99th-percentile |a - b| over the pixels that paste() must leave alone: all but the
    mouth-centred face.PASTE region of the box."""
    keep = np.ones(a.shape[:2], bool)
    x, y, s, _ = (int(round(v)) for v in face.square(box))
    x0, y0, x1, y1 = face.region(face.PASTE, s)
    keep[max(y + y0, 0):max(y + y1, 0), max(x + x0, 0):max(x + x1, 0)] = False
    d = np.abs(a.astype(int) - b.astype(int))[keep]
    return d.mean(), np.percentile(d, 99)


def codec_noise(frames, tmp):
    """The same frames re-encoded and decoded by the writer sample.py uses: what 'unchanged' looks like."""
    with VideoWriter(tmp, frames.shape[2], frames.shape[1]) as w:
        for f in frames:
            w.write(f)
    return np.stack(list(read_frames(tmp)))


def tracked(frames, box):
    """The boxes sample.py follows: the same tracker over the same frames."""
    t = face.Tracker(frames[0], box)
    return [t.box] + [t.update(f) for f in frames[1:]]


def audio_stream(path):
    with av.open(path) as c:
        s = c.streams.audio[0]
        return s.codec_context.name, s.codec_context.sample_rate


def ckpt_args(tiny_ckpts):
    return [f"--editor={tiny_ckpts['refine'][0]}", f"--pose={tiny_ckpts['pose'][0]}"]


def test_sample_end_to_end_extends_the_video_forward_backward(tiny_ckpts, tmp_path):
    src = source_video(str(tmp_path / "in.mp4"))                   # 25 frames
    decoded = np.stack(list(read_frames(str(tmp_path / "in.mp4"))))
    # stereo 48 kHz driving speech, longer than the video: 1.6 s -> 40 frames
    speech = synth.make_clip(19, 1, seconds=1.6)["audio"]
    stereo = resample(torch.from_numpy(speech), 16000, 48000).numpy()
    sf.write(tmp_path / "speech.wav", np.stack([stereo, 0.5 * stereo], 1), 48000)
    out = tmp_path / "out.mp4"
    r = run_script("sample.py", "--video", str(tmp_path / "in.mp4"), "--audio", str(tmp_path / "speech.wav"),
                   "--box", ",".join(map(str, BOX)), "--out", str(out), *ckpt_args(tiny_ckpts))
    assert r.returncode == 0, r.stderr
    assert "frame 40/40" in r.stderr                                 # the progress line
    info = probe(str(out))
    assert (info.width, info.height, info.frames) == (128, 112, 40) and info.has_audio
    assert audio_stream(str(out)) == ("aac", 16000)
    heard = load_audio(str(out))
    assert abs(len(heard) / 16000 - 1.6) <= 1 / 25
    n = min(len(heard), len(speech))
    assert np.corrcoef(heard[:n].numpy(), speech[:n])[0, 1] > 0.9  # the driving audio, not the video's own
    frames = np.stack(list(read_frames(str(out))))
    order = list(range(25)) + list(range(23, 8, -1))                 # forwards, then backwards
    expect = decoded[order]
    plain = codec_noise(expect, str(tmp_path / "plain.mp4"))
    boxes = tracked(decoded, BOX)
    for k in range(40):
        mean, p99 = outside_diff(frames[k], expect[k], boxes[order[k]])
        floor, floor99 = outside_diff(plain[k], expect[k], boxes[order[k]])
        assert mean < floor + 0.3 and p99 <= floor99 + 3, (k, mean, p99, floor, floor99)
    # frame 30 is source frame 18 (backwards), not 5 (looping): the head moves, so this can tell
    assert outside_diff(frames[30], decoded[18], BOX)[0] < 0.8 * outside_diff(frames[30], decoded[5], BOX)[0]
    # and the lower face was edited
    x0, y0, x1, y1 = face.region(face.MOUTH, 96)
    mouth = (slice(8 + y0, 8 + y1), slice(16 + x0, 16 + x1))
    assert np.abs(frames[:25][(slice(None), *mouth)].astype(int) - src[(slice(None), *mouth)]).mean() > 3


def test_sample_animates_a_still_image_side_by_side(tiny_ckpts, tmp_path):
    frame = source_video(str(tmp_path / "in.mp4"), seconds=0.2)[0]
    write_png(str(tmp_path / "face.png"), frame)
    sf.write(tmp_path / "speech.wav", synth.make_clip(19, 1, seconds=0.6)["audio"], 16000)
    out = tmp_path / "still.mp4"
    # no --box: the whole frame is the face
    r = run_script("sample.py", "--video", str(tmp_path / "face.png"), "--audio", str(tmp_path / "speech.wav"),
                   "--out", str(out), "--compare", *ckpt_args(tiny_ckpts))
    assert r.returncode == 0, r.stderr
    info = probe(str(out))
    assert (info.width, info.height, info.frames) == (256, 112, 15)
    frames = np.stack(list(read_frames(str(out))))
    plain = codec_noise(np.concatenate([frame, frame], 1)[None], str(tmp_path / "plain.mp4"))[0]
    whole = (0, 0, 128, 112)
    diff = lambda a: np.abs(a.astype(int) - frame).mean()
    assert diff(frames[7, :, :128]) < diff(plain[:, :128]) + 0.5                # left: the source
    assert outside_diff(frames[7, :, 128:], frame, whole)[0] < outside_diff(plain[:, 128:], frame, whole)[0] + 0.3
    assert not np.array_equal(frames[7], frames[0])                           # the still face moves


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    source_video(str(d / "in.mp4"), seconds=0.4)
    sf.write(d / "speech.wav", synth.make_clip(19, 1, seconds=0.4)["audio"], 16000)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    return d


@pytest.mark.parametrize("change, message", [
    (dict(video="missing.mp4"), "video file not found"),
    (dict(audio="missing.wav"), "audio file not found"),
    (dict(video="speech.wav"), "has no video stream"),
    (dict(audio="empty.wav"), "zero length"),
    (dict(box="500,500,40,40"), "lies outside the 128x112 frame"),
    (dict(box="-200,8,96,96"), "lies outside the 128x112 frame"),
    (dict(editor="ae"), "holds a 'ae' model; --editor needs a 'refine'"),
    (dict(pose="editor"), "holds a 'editor' model, but a 'pose' model is needed"),
    (dict(out="out.avi"), "give a name ending in .mp4"),
    (dict(lookahead="2", pose_frames="0"), "--pose_frames=0: give 1 or more"),
])
def test_sample_bad_input_is_one_line_and_no_file(tiny_ckpts, inputs, tmp_path, change, message):
    args = dict(video=str(inputs / "in.mp4"), audio=str(inputs / "speech.wav"), box="16,8,96,96",
                out=str(tmp_path / "out.mp4"), editor=tiny_ckpts["refine"][0], pose=tiny_ckpts["pose"][0])
    for k, v in change.items():
        args[k] = tiny_ckpts[v][0] if k in ("editor", "pose") else (
            str(tmp_path / v) if k == "out" else str(inputs / v) if k in ("video", "audio") else v)
    r = run_script("sample.py", *[f"--{k}={v}" for k, v in args.items()])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []                          # nothing written, not even a temp file


def test_sample_refuses_to_overwrite_an_input(tiny_ckpts, inputs, tmp_path):
    """--out naming an input, directly or through a symbolic or a hard link: one line, the input untouched."""
    video = tmp_path / "talk.mp4"
    video.write_bytes((inputs / "in.mp4").read_bytes())
    before = video.read_bytes()
    (tmp_path / "soft.mp4").symlink_to(video)
    os.link(video, tmp_path / "hard.mp4")
    for out in (video, tmp_path / "soft.mp4", tmp_path / "hard.mp4"):
        r = run_script("sample.py", f"--video={video}", f"--audio={inputs / 'speech.wav'}", "--box=16,8,96,96",
                       f"--out={out}", *ckpt_args(tiny_ckpts))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "is the input video" in lines[0], r.stderr
        assert video.read_bytes() == before
    # the speech can come from a video file too: an output on it is refused as well
    r = run_script("sample.py", f"--video={inputs / 'in.mp4'}", f"--audio={video}", f"--out={video}",
                   *ckpt_args(tiny_ckpts))
    assert r.returncode == 2 and "is the driving audio" in r.stderr and video.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.mp4", "soft.mp4", "talk.mp4"]


def test_sample_treats_nan_samples_as_silence(tiny_ckpts, inputs, tmp_path):
    speech = synth.make_clip(19, 1, seconds=0.4)["audio"].copy()
    speech[3000:4000] = np.nan
    speech[5000] = np.inf
    sf.write(tmp_path / "broken.wav", speech, 16000, subtype="FLOAT")
    out = tmp_path / "out.mp4"
    r = run_script("sample.py", f"--video={inputs / 'in.mp4'}", f"--audio={tmp_path / 'broken.wav'}",
                   "--box=16,8,96,96", f"--out={out}", *ckpt_args(tiny_ckpts))
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "1001 of 6400 samples are not numbers (NaN or inf); treated as silence" in r.stderr
    assert "Traceback" not in r.stderr and probe(str(out)).frames == 10
    heard = load_audio(str(out))
    assert torch.isfinite(heard).all() and heard[3100:3900].abs().max() < 0.02     # the NaNs came out silent


def test_sample_face_box_crossing_the_frame_edge(tiny_ckpts, inputs, tmp_path):
    """Half the face box hangs over the left edge: the crop is padded, only pixels in the frame are pasted."""
    src = np.stack(list(read_frames(str(inputs / "in.mp4"))))
    out = tmp_path / "edge.mp4"
    box = (-48, 8, 96, 96)
    r = run_script("sample.py", f"--video={inputs / 'in.mp4'}", f"--audio={inputs / 'speech.wav'}",
                   "--box=" + ",".join(map(str, box)), f"--out={out}", *ckpt_args(tiny_ckpts))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    got = np.stack(list(read_frames(str(out))))
    assert got.shape == src.shape
    plain = codec_noise(src, str(tmp_path / "plain.mp4"))
    boxes = tracked(src, box)
    for k in range(len(src)):
        mean, p99 = outside_diff(got[k], src[k], boxes[k])
        floor, floor99 = outside_diff(plain[k], src[k], boxes[k])
        assert mean < floor + 0.3 and p99 <= floor99 + 3, (k, mean, p99, floor, floor99)


def test_streaming_poses_equal_offline_emulation_and_noise_is_per_frame(tiny_ckpts, tiny_data):
    lips = LipSync.load(tiny_ckpts["refine"][0], tiny_ckpts["pose"][0])
    lips.set_reference(torch.zeros(4, 32, 32, 3, dtype=torch.uint8))
    audio = torch.from_numpy(synth.make_clip(19, 1, seconds=2.0)["audio"])
    # the starting noise of a frame does not depend on where a window starts
    assert torch.equal(frame_noise(3, 250, 20)[10:], frame_noise(3, 260, 10))
    assert torch.equal(frame_noise(3, -5, 10)[:5], torch.zeros(5, 12))
    # streamed in batches of any size: the same poses (each frame has its own window)
    a = lips.poses(audio, lookahead=2, batch=64)
    b = lips.poses(audio, lookahead=2, batch=7)
    assert a.shape == (50, 12) and torch.allclose(a, b, atol=1e-5)
    # audio after frame t + lookahead + 2 (mel reach) cannot change frame t
    later = audio.clone()
    later[30 * 640:] = torch.randn(20 * 640) * 0.1
    c = lips.poses(later, lookahead=2)
    assert torch.allclose(a[:26], c[:26], atol=1e-5) and not torch.allclose(a[30:], c[30:])
    # offline: overlapping windows blended, the same length, different from streaming
    off = lips.poses(audio)
    assert off.shape == (50, 12) and torch.isfinite(off).all()


def test_sample_on_real_video(media, tiny_ckpts, tmp_path):
    out = tmp_path / "sun.mp4"
    r = run_script("sample.py", "--video", f"{media}/sun.mp4", "--audio", f"{media}/sun.wav",
                   "--box", "176,140,208,208", "--out", str(out), *ckpt_args(tiny_ckpts))
    assert r.returncode == 0, r.stderr
    info = probe(str(out))
    assert (info.width, info.height) == (576, 768)
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == 25
    assert audio_stream(str(out))[0] == "aac"
    speech = sf.info(f"{media}/sun.wav").duration
    assert abs(info.frames / 25 - speech) <= 1 / 25
    assert abs(len(load_audio(str(out))) / 16000 - speech) <= 1 / 25
    # every pixel outside the pasted lower face is the source's, up to codec noise (measured by
    # re-encoding the source frames alone), along the track sample.py followed
    src = np.stack(list(itertools.islice(read_frames(f"{media}/sun.mp4"), 120)))
    got = np.stack(list(itertools.islice(read_frames(str(out)), 120)))
    plain = codec_noise(src, str(tmp_path / "plain.mp4"))
    for k, box in enumerate(tracked(src, (176, 140, 208, 208))):
        if k % 10 == 0:
            mean, p99 = outside_diff(got[k], src[k], box)
            floor, floor99 = outside_diff(plain[k], src[k], box)
            assert mean < floor + 0.3 and p99 <= floor99 + 3, (k, mean, p99, floor, floor99)

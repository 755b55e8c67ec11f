import json
import os

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_script
from flashsync import SAMPLES_PER_FRAME, synth
from flashsync.dataset import ClipDataset, load_clip
from flashsync.video import VideoWriter


def test_synth_dataset_and_loader(tmp_path):
    out = tmp_path / "synth"
    r = run_script("data.py", "synth", f"--out_dir={out}", "--identities=10", "--clips_per_identity=1",
                   "--seconds=1.0", "--resolution=32", "--occluder_prob=1.0")
    assert r.returncode == 0, r.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["resolution"] == 32 and len(index["clips"]) == 10
    assert {c["split"] for c in index["clips"]} == {"train", "val", "test"}
    frames, audio, meta, occ = load_clip(str(out), index["clips"][0]["name"])
    assert frames.shape == (25, 32, 32, 3) and len(audio) == 25 * SAMPLES_PER_FRAME
    assert meta["source"] == "synthtalk" and len(meta["gt"]["open"]) == 25 and occ is not None
    ds = ClipDataset(str(out), "train", length=5, stride=5)
    assert len(ds) == 8 * 5
    item = ds[7]
    assert item["video"].shape == (5, 32, 32, 3) and item["video"].dtype == torch.uint8
    assert item["audio"].shape == (5 * SAMPLES_PER_FRAME,)
    assert item["open"].shape == (5,) and item["mouth_box"].shape == (5, 4)
    clip = ds.clips[item["clip"]]["name"]
    whole = np.load(out / "clips" / clip / "frames.npy")
    assert np.array_equal(item["video"].numpy(), whole[item["start"]:item["start"] + 5])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=0)
    assert next(iter(loader))["video"].shape == (4, 5, 32, 32, 3)


def make_video(path, seconds=2.0, size=(160, 120), audio=True):
    """A talking SynthTalk face moving inside a larger frame, with its audio track."""
    c = synth.make_clip(9, 3, seconds=seconds, res=64)
    w, h = size
    with VideoWriter(str(path), w, h, audio=c["audio"] if audio else None) as wr:
        for k, f in enumerate(c["video"]):
            frame = np.full((h, w, 3), 60, np.uint8)
            x = 40 + k // 5
            frame[30:94, x:x + 64] = f
            wr.write(frame)
    return c


def test_video_to_dataset(tmp_path):
    src = tmp_path / "talk.mp4"
    make_video(src)
    out = tmp_path / "real"
    r = run_script("data.py", "video", str(src), "--box", "40,30,64,64", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    frames, audio, meta, _ = load_clip(str(out), "talk")
    assert frames.shape == (50, 64, 64, 3) and len(audio) == 50 * SAMPLES_PER_FRAME
    boxes = np.array(meta["boxes"])
    truth = 40 + np.arange(50) // 5
    assert np.abs(boxes[10:, 0] - truth[10:]).max() < 3           # the tracker follows the face
    # external audio that is longer than the video is trimmed to it
    sf.write(tmp_path / "long.wav", np.random.default_rng(0).uniform(-0.1, 0.1, 44100 * 3).astype(np.float32), 44100)
    r = run_script("data.py", "video", str(src), "--box=40,30,64,64", f"--audio={tmp_path / 'long.wav'}",
                   f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    _, audio, meta, _ = load_clip(str(out), "talk")
    assert len(audio) == 50 * SAMPLES_PER_FRAME and meta["audio"].endswith("long.wav")


@pytest.mark.parametrize("case", ["missing", "text", "no_audio", "box_outside", "unknown_key", "no_box"])
def test_bad_input_one_line_no_output(tmp_path, case):
    src = tmp_path / "talk.mp4"
    out = tmp_path / "out"
    args = ["data.py", "video", str(src), "--box=40,30,64,64", f"--out_dir={out}"]
    if case == "missing":
        args[2] = str(tmp_path / "nope.mp4")
        expect = "not found"
    elif case == "text":
        (tmp_path / "fake.mp4").write_text("definitely not a video\n" * 50)
        args[2] = str(tmp_path / "fake.mp4")
        expect = "not a video file"
    elif case == "no_audio":
        make_video(src, seconds=0.4, audio=False)
        expect = "has no audio track; give the speech with --audio"
    elif case == "box_outside":
        make_video(src, seconds=0.4)
        args[3] = "--box=500,400,64,64"
        expect = "lies outside the 160x120 frame"
    elif case == "unknown_key":
        make_video(src, seconds=0.4)
        args.append("--resolutoin=64")
        expect = "unknown config key --resolutoin (did you mean --resolution?)"
    else:
        make_video(src, seconds=0.4)
        del args[3]
        expect = "give the face box"
    r = run_script(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()                                       # nothing written


# Face positions in sun.mp4 annotated by eye (midpoint of the two pupils, full-resolution pixels)
SUN_EYES = {0: (270.5, 214.5), 100: (269.5, 214.4), 142: (270.0, 214.5), 200: (270.5, 215.0),
            300: (269.5, 214.0), 366: (268.0, 214.5), 400: (270.0, 215.0), 549: (270.0, 215.0)}


def test_real_video_stays_on_the_face(media, tmp_path):
    out = tmp_path / "sun"
    r = run_script("data.py", "video", f"{media}/sun.mp4", f"--audio={media}/sun.wav", "--box", "176,140,208,208",
                   f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    frames, audio, meta, _ = load_clip(str(out), "sun")
    assert frames.shape[0] == 550 and meta["fps"] == 25
    assert len(audio) == 550 * SAMPLES_PER_FRAME                  # 22.5 s of speech trimmed to 22.0 s
    boxes = np.array(meta["boxes"])
    x0, y0 = SUN_EYES[0]
    for k, (x, y) in SUN_EYES.items():
        expected = (176 + x - x0, 140 + y - y0)
        assert abs(boxes[k, 0] - expected[0]) < 0.1 * 208 and abs(boxes[k, 1] - expected[1]) < 0.1 * 208, k


def test_sampler_draws_windows_around_laughs_and_sighs(tmp_path):
    """nsv=1: every window holds a laugh or a sigh frame, some start before it (onsets); nsv=0: as often as the
    clips have them."""
    out = tmp_path / "synth"
    r = run_script("data.py", "synth", f"--out_dir={out}", "--identities=10", "--clips_per_identity=1",
                   "--seconds=3.0", "--resolution=16", "--nsv=0.6")
    assert r.returncode == 0, r.stderr
    from flashsync.dataset import FrameSampler
    from flashsync.speech import LAUGH, SIGH
    rates = {}
    for share in (0.0, 1.0):
        fs = FrameSampler(str(out), "train", refs=1, length=6, nsv=share)
        g = torch.Generator().manual_seed(0)
        labels = torch.cat([fs.batch(8, g)["label"] for _ in range(10)])              # (80, 6)
        nsv = (labels == LAUGH) | (labels == SIGH)
        rates[share] = nsv.any(1).float().mean().item()
        if share:
            assert nsv.any(1).all()
            assert (~nsv[:, 0]).any()           # windows that start before their event
    assert rates[0.0] < 0.8 < rates[1.0]

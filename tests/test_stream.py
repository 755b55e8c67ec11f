import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, run_script
from flashsync import synth
from flashsync.video import probe, read_frames
from test_sample import ckpt_args, source_video


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inputs(tmp_path):
    source_video(str(tmp_path / "in.mp4"), seconds=1.0)
    sf.write(tmp_path / "speech.wav", synth.make_clip(19, 1, seconds=2.0)["audio"], 16000)
    return ["--video", str(tmp_path / "in.mp4"), "--audio", str(tmp_path / "speech.wav"), "--box", "16,8,96,96"]


def test_stream_from_files_equals_sample_streaming_mode(tiny_ckpts, tmp_path):
    args = inputs(tmp_path) + ckpt_args(tiny_ckpts)
    r = run_script("stream.py", *args, "--record", str(tmp_path / "live.mp4"), "--record_preset=veryfast", "--port=0",
                   "--realtime=false")
    assert r.returncode == 0, r.stderr
    assert "0 dropped" in r.stdout
    # batch 2 as the stream edits (its --pose_frames group at once): convolutions over another number of
    # crops may round a pixel the other way (on a 2-core AVX2 EPYC batch 1 did: mean 0.36, up to 39 levels),
    # and the paste's replace mask turns one grey level of an untrained model's crop into up to
    # |recon - source| / 20 levels (this test's 4-step models are far from their source)
    r = run_script("sample.py", *args, "--out", str(tmp_path / "offline.mp4"), "--lookahead=2", "--pose_frames=2",
                   "--batch=2")
    assert r.returncode == 0, r.stderr
    live = np.stack(list(read_frames(str(tmp_path / "live.mp4"))))
    ref = np.stack(list(read_frames(str(tmp_path / "offline.mp4"))))
    assert live.shape == ref.shape == (50, 112, 128, 3)              # 2 s of speech: the video plays back and forth
    diff = np.abs(live.astype(int) - ref)
    assert diff.mean() < 0.05 and np.percentile(diff, 99.9) <= 2, (diff.mean(), diff.max())


def test_stream_in_real_time_serves_the_page_and_records(tiny_ckpts, tmp_path):
    port = free_port()
    out = tmp_path / "rec.mp4"
    cmd = [sys.executable, os.path.join(ROOT, "stream.py"), *inputs(tmp_path), *ckpt_args(tiny_ckpts),
           "--record", str(out), f"--port={port}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    t0, jpeg, stats = time.time(), b"", b""
    while time.time() - t0 < 60 and proc.poll() is None and not jpeg:
        try:
            jpeg = urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=5).read()
            stats = urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5).read()
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        except OSError:
            time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert jpeg[:2] == b"\xff\xd8" and b"fps" in stats and b"/stream" in page       # a live JPEG frame and the page
    info = probe(str(out))
    assert info.frames == 50 and info.has_audio                      # the recording lasts as long as the speech
    assert "dropped" in stdout and "FPS" in stdout
    # where the time goes, per stage, so a user can see what keeps a bigger model from real time
    stages = dict(kv.rsplit(" ", 1) for kv in stdout.split("mean ms per frame: ")[1].split(" (at")[0].split(", "))
    assert set(stages) == {"pose", "edit", "paste", "output"} and all(float(v) >= 0 for v in stages.values())


def test_stream_missing_camera_is_one_line(tiny_ckpts, tmp_path):
    r = run_script("stream.py", "--camera=/dev/video97", *ckpt_args(tiny_ckpts), "--port=0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: camera '/dev/video97'") and "cannot be opened" in lines[0]


def test_stream_real_video_in_real_time(media, tiny_ckpts, tmp_path):
    out = tmp_path / "live.mp4"
    r = run_script("stream.py", "--video", f"{media}/sun.mp4", "--audio", f"{media}/tts_en.wav",
                   "--box", "176,140,208,208", "--record", str(out), "--port=0", *ckpt_args(tiny_ckpts))
    assert r.returncode == 0, r.stderr
    speech = sf.info(f"{media}/tts_en.wav").duration                  # 5.78 s: not a whole number of frames
    info = probe(str(out))
    assert (info.width, info.height) == (576, 768) and abs(info.frames / 25 - speech) <= 1 / 25
    assert " dropped" in r.stdout


def test_prefetch_keeps_order_and_raises_the_sources_error():
    """stream.prefetch decodes ahead in a thread: the items come in order, and an error of the source
    (a damaged file) reaches the loop as itself, after the items before it."""
    sys.path.insert(0, ROOT)
    import stream
    from flashsync.util import UserError
    assert list(stream.prefetch(iter(range(100)), 4)) == list(range(100))

    def damaged():
        yield 1
        raise UserError("damaged")
    items = stream.prefetch(damaged(), 4)
    assert next(items) == 1
    with pytest.raises(UserError, match="damaged"):
        next(items)

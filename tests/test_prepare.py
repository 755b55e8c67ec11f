"""data.py videos: a dataset tree (speaker/clip folders, broken files among them) prepared in parallel,
split by speaker, resumed after a SIGKILL with the same index, and trained on."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, TINY, run_script
from flashsync import synth
from flashsync.prepare import cut_points
from flashsync.tree import assign_splits, clip_names, load_boxes, speaker_of
from flashsync.video import VideoWriter

SPEAKERS = 4        # 2 clips each; val and test get one speaker each by the empty-split rule
BROKEN = {"spk0/trunc.mp4": "unreadable", "spk1/notes.mp4": "unreadable", "spk2/mute.mp4": "no audio",
          "spk3/blip.mp4": "too short"}


def _write(path, frames, audio=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with VideoWriter(path, frames.shape[2], frames.shape[1], audio=audio) as w:
        for f in frames:
            w.write(f)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """LRS3-like: ROOT/spk<i>/<clip>.mp4 at 224 px with AAC (whole frame = face), a transcript beside each,
    and four broken files: a truncated mp4, a text file named .mp4, a clip without audio, a 0.2 s clip."""
    root = tmp_path_factory.mktemp("tree") / "lrs"
    for s in range(SPEAKERS):
        for k in range(2):
            c = synth.make_clip(s, k, seconds=1.6, res=224)
            _write(str(root / f"spk{s}" / f"{k:05d}.mp4"), c["video"], c["audio"])
            (root / f"spk{s}" / f"{k:05d}.txt").write_text("Text:  HELLO WORLD\n")
    good = (root / "spk0" / "00000.mp4").read_bytes()
    (root / "spk0" / "trunc.mp4").write_bytes(good[:len(good) // 3])
    (root / "spk1" / "notes.mp4").write_text("not a video at all\n")
    c = synth.make_clip(2, 5, seconds=1.6, res=224)
    _write(str(root / "spk2" / "mute.mp4"), c["video"])
    c = synth.make_clip(3, 5, seconds=0.2, res=224)
    _write(str(root / "spk3" / "blip.mp4"), c["video"], c["audio"])
    return str(root)


def _prepare(tree, out, *extra):
    return run_script("data.py", "videos", tree, f"--out_dir={out}", "--resolution=32", *extra)


def _index(out):
    with open(os.path.join(out, "index.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prep") / "data")
    r = _prepare(tree, out, "--workers=2")
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_tree_prepared_with_two_workers(tree, prepared):
    out, stdout = prepared
    index = _index(out)
    names = {c["name"] for c in index["clips"]}
    assert names == {f"spk{s}__{k:05d}" for s in range(SPEAKERS) for k in range(2)}       # every good clip
    for c in index["clips"]:
        d = os.path.join(out, "clips", c["name"])
        frames = np.load(os.path.join(d, "frames.npy"), mmap_mode="r")
        assert frames.shape == (40, 32, 32, 3) and c["frames"] == 40
    with open(os.path.join(out, "lrs_report.json")) as f:
        report = json.load(f)
    assert {s["path"]: s["reason"] for s in report["skipped"]} == BROKEN                 # every bad one, its reason
    assert report["skipped_by_reason"] == {"unreadable": 2, "no audio": 1, "too short": 1}
    assert report["other_files"] == {".txt": 8}                                         # transcripts: not errors
    # disjoint by speaker, every split used
    by = {}
    for c in index["clips"]:
        by.setdefault(c["split"], set()).add(c["speaker"])
    assert set(by) == {"train", "val", "test"}
    assert not (by["train"] & by["val"]) and not (by["train"] & by["test"]) and not (by["val"] & by["test"])
    assert "skipped, unreadable: 2" in stdout and "frames/s" in stdout


def test_sigkill_midway_then_resume_equals_uninterrupted(tree, prepared, tmp_path):
    out = str(tmp_path / "data")
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, os.path.join(ROOT, "data.py"), "videos", tree, f"--out_dir={out}", "--resolution=32",
           "--workers=2"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    marks = os.path.join(out, "prepared")
    t0 = time.time()
    records = lambda: [f for f in os.listdir(marks) if f.endswith(".json") and not f.startswith(".")]
    while time.time() - t0 < 120 and (not os.path.isdir(marks) or len(records()) < 3):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)                   # the parent and its workers, mid-run
    p.wait()
    time.sleep(0.5)
    before = {f: os.path.getmtime(os.path.join(marks, f)) for f in records()}
    assert 0 < len(before) < len(BROKEN) + 2 * SPEAKERS, "the kill should land midway"
    clips = os.path.join(out, "clips")
    finished = {d: os.path.getmtime(os.path.join(clips, d, "frames.npy"))
                for d in (os.listdir(clips) if os.path.isdir(clips) else []) if not d.startswith(".")}
    for d in finished:                                 # no clip under its final name is half written
        assert sorted(os.listdir(os.path.join(clips, d))) == ["audio.wav", "frames.npy", "meta.json"]
    r = _prepare(tree, out, "--workers=2")
    assert r.returncode == 0, r.stderr
    assert f"{len(before)} already prepared" in r.stdout
    assert _index(out) == _index(prepared[0])          # the same index as the uninterrupted run
    for f, t in before.items():                        # nothing prepared twice
        assert os.path.getmtime(os.path.join(marks, f)) == t
    for d, t in finished.items():
        assert os.path.getmtime(os.path.join(clips, d, "frames.npy")) == t
    assert not [f for f in os.listdir(clips) if f.startswith(".")]      # a killed run's temporaries are gone


def test_prepared_tree_trains(prepared, tmp_path):
    r = run_script("train.py", "--model=ae", f"--data_dir={prepared[0]}", f"--out_dir={tmp_path / 'ae'}",
                   "--max_steps=3", "--eval_every=3", *TINY)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(tmp_path / "ae" / "ckpt.pt")


def test_no_videos_and_bad_options_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_script("data.py", "videos", str(tmp_path / "empty"), f"--out_dir={tmp_path / 'o'}")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "no video files" in r.stderr
    r = run_script("data.py", "videos", str(tmp_path / "missing"), f"--out_dir={tmp_path / 'o'}")
    assert r.returncode == 2 and "is not a directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_split_rule_is_fixed_disjoint_and_fills_val_and_test():
    speakers = [f"id{i:05d}" for i in range(200)]
    a = assign_splits(speakers)
    assert a == assign_splits(list(reversed(speakers)))                 # order does not matter
    assert set(a.values()) == {"train", "val", "test"}
    assert 2 <= sum(v == "val" for v in a.values()) <= 25               # about 5 %
    more = assign_splits(speakers + [f"new{i}" for i in range(50)])
    assert all(more[s] == a[s] for s in speakers)                       # adding speakers moves no old one
    assert set(assign_splits(["a", "b", "c"]).values()) == {"train", "val", "test"}
    assert set(assign_splits(["a", "b"]).values()) == {"train"}            # too few to hold any out


def test_speaker_and_name_from_layouts():
    assert speaker_of("id00012/abc_XYZ/00001.mp4") == "id00012"            # VoxCeleb2
    assert speaker_of("WRA_Obama_000.mp4") == speaker_of("WRA_Obama_001.mp4") == "WRA_Obama"   # HDTF
    assert speaker_of("WRA_Obama_000.mp4", r"^[A-Z]+_(\w+?)_\d+") == "Obama"
    names = clip_names(["id00012/abc XYZ/00001.mp4", "张三/视频1.mp4", "李四/视频1.mp4", "a/b c.mp4", "a/b_c.mp4"])
    assert names["id00012/abc XYZ/00001.mp4"] == "id00012__abc_XYZ__00001"
    assert names["张三/视频1.mp4"] == "张三__视频1" and len(set(names.values())) == 5       # no two alike


def test_long_videos_cut_at_silences():
    level = np.full(1000, -10.0)
    level[[240, 520, 777]] = -60.0                    # pauses near 10 s, 20 s, 30 s at 25 fps
    cuts = cut_points(level, 1000, 250, 25)
    assert [c for c, _ in cuts[1:]] == [240, 520, 777]
    assert cuts[0][0] == 0 and cuts[-1][1] == 1000
    assert all(b == c for (_, b), (c, _) in zip(cuts, cuts[1:]))       # contiguous, nothing lost
    assert cut_points(np.zeros(300), 300, 250, 25) == [(0, 300)]        # up to 1.5 clips stay whole


def test_long_videos_with_a_box_table_are_cut_and_tracked(tmp_path):
    """HDTF-like: long videos directly in ROOT, face boxes from a CSV; cut into clips at silences; a video
    whose face gives way to noise is kept up to where the tracker lost it."""
    root = tmp_path / "hdtf"
    c = synth.make_clip(5, 0, seconds=5.0, res=96)
    big = np.full((len(c["video"]), 144, 176, 3), 40, np.uint8)
    big[:, 30:126, 50:146] = c["video"]
    _write(str(root / "WRA_A_000.mp4"), big, c["audio"])
    lost = big.copy()
    lost[60:] = np.random.default_rng(0).integers(0, 256, lost[60:].shape, dtype=np.uint8)  # no face from 2.4 s
    _write(str(root / "WRA_B_000.mp4"), lost, c["audio"])
    (root / "..").joinpath("boxes.csv").write_text("path,x,y,w,h\nWRA_A_000.mp4,50,30,96,96\nWRA_B_000.mp4,50,30,96,96\n")
    out = tmp_path / "data"
    r = _prepare(str(root), str(out), f"--boxes={tmp_path / 'boxes.csv'}", "--clip_seconds=2", "--min_seconds=0.8")
    assert r.returncode == 0, r.stderr
    index = _index(str(out))
    a = sorted((x["name"], x["frames"]) for x in index["clips"] if x["name"].startswith("WRA_A"))
    assert [n for n, _ in a] == [f"WRA_A_000_s{i:03d}" for i in range(len(a))] and len(a) >= 2   # cut
    assert sum(f for _, f in a) == 125 and all(37 <= f <= 75 for _, f in a)
    frames = np.load(out / "clips" / "WRA_A_000_s000" / "frames.npy")
    want = synth.make_clip(5, 0, seconds=0.4, res=32)["video"]
    assert np.abs(frames[:10].astype(float) - want.astype(float)).mean() < 12          # the face, tracked
    b = [x for x in index["clips"] if x["name"].startswith("WRA_B")]
    assert b and sum(x["frames"] for x in b) in range(40, 61)                         # the clips before the loss
    with open(out / "hdtf_report.json") as f:
        report = json.load(f)
    assert [s["reason"] for s in report["skipped"]] == ["box lost"]
    assert report["speakers"]["train"] + report["speakers"]["val"] + report["speakers"]["test"] == 2


def test_clips_out_of_sync_are_skipped_with_the_offset(tmp_path, monkeypatch):
    """--max_offset: a clip the sync expert confidently finds >= K frames out of sync is left out and
    reported; a confident small offset or an unsure large one is kept (the expert stubbed: its own
    accuracy is tested in test_eval)."""
    import flashsync.prepare as prep
    import flashsync.syncnet as syncnet
    c = synth.make_clip(1, 0, seconds=1.6, res=64)
    _write(str(tmp_path / "t" / "a" / "x.mp4"), c["video"], c["audio"])
    monkeypatch.setattr(prep, "_sync_expert", lambda path: None)
    job = dict(root=str(tmp_path / "t"), rel="a/x.mp4", name="a__x", speaker="a", out=str(tmp_path / "o"), box=None,
               options=dict(resolution=32, crop="full", clip_seconds=10.0, min_seconds=1.0, max_offset=3,
                            syncnet="unused", min_confidence=0.5))
    os.makedirs(tmp_path / "o" / "prepared")
    for offset, conf, kept in ((4, 0.9, False), (2, 0.9, True), (6, 0.1, True)):
        monkeypatch.setattr(syncnet, "lse", lambda net, f, a: dict(offset=offset, lse_c=conf, lse_d=1.0))
        rec = prep.prepare_video(dict(job, name=f"a__x{offset}"))
        assert (rec.get("skipped") is None) == kept, rec
        if not kept:
            assert rec["skipped"] == "out of sync" and "+4 frames" in rec["detail"]
            assert not os.path.exists(tmp_path / "o" / "clips" / f"a__x{offset}")


def test_box_tables_csv_and_json(tmp_path):
    from flashsync.util import UserError
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "b.txt").write_text("10 20 30 30\n11,21,30,30\n")
    (tmp_path / "t.csv").write_text("name,left,top,width,height\n./spk/a.mp4,1,2,3,4\nspk/b.mp4,det/b.txt\n")
    t = load_boxes(str(tmp_path / "t.csv"))
    assert t["spk/a.mp4"] == (1, 2, 3, 4) and t["spk/b.mp4"] == str(tmp_path / "det" / "b.txt")
    (tmp_path / "t.json").write_text(json.dumps({"a.mp4": [1, 2, 3, 4], "b.mp4": [[1, 2, 3, 4], [2, 3, 4, 5]],
                                                 "c.mp4": "det/b.txt"}))
    t = load_boxes(str(tmp_path / "t.json"))
    assert t["a.mp4"] == (1, 2, 3, 4) and t["b.mp4"][1] == (2, 3, 4, 5) and t["c.mp4"].endswith("b.txt")
    (tmp_path / "bad.csv").write_text("a.mp4,1,2,3,4\nb.mp4,1,2,x,4\n")
    with pytest.raises(UserError, match="line 2"):
        load_boxes(str(tmp_path / "bad.csv"))

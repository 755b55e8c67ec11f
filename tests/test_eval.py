import math

import numpy as np
import torch

from flashsync import metrics, synth
from flashsync.audio import SILENCE
from flashsync.syncnet import MAX_OFFSET, lse, offset_distances, shift_audio


def test_psnr_ssim_pearson_known_answers():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert metrics.psnr(a, a) == math.inf
    assert abs(metrics.ssim(a, a) - 1) < 1e-6
    b = a.astype(int) + 1
    b[b > 255] = 254
    assert abs(metrics.psnr(a, b.astype(np.uint8)) - 10 * math.log10(255 ** 2)) < 1e-3   # |diff| = 1: 48.13 dB
    assert metrics.psnr(np.zeros_like(a), np.full_like(a, 255)) == 0.0
    # a region: only the pixels inside count
    c = a.copy()
    c[:, :8] = 0
    assert metrics.psnr(a, c, np.r_[np.zeros(8), np.ones(8)][:, None] * np.ones(16)) == math.inf
    x = rng.normal(size=50)
    assert abs(metrics.pearson(x, x) - 1) < 1e-12 and abs(metrics.pearson(x, -x) + 1) < 1e-12
    assert metrics.flicker(a, a) == 1.0


def test_lipleak_all_closed_and_all_open():
    n = 20
    closed = synth.make_clip(9, 0, seconds=n / 25, mouth=dict(open=np.zeros(n), width=np.full(n, 0.5),
                                                              round=np.zeros(n), teeth=np.zeros(n)))["video"]
    wide = synth.make_clip(9, 0, seconds=n / 25, mouth=dict(open=np.ones(n), width=np.full(n, 0.6),
                                                            round=np.zeros(n), teeth=np.zeros(n)))["video"]
    assert metrics.lipleak(closed) == 0.0
    assert metrics.lipleak(wide) == 1.0


def test_offset_distances_find_a_known_shift():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(100, 8), dim=-1)
    for k in (-7, 0, 4, 15):
        a = torch.roll(v, k, 0)                  # a_{t+k} = v_t: the audio is k frames late
        d = offset_distances(v, a)
        assert int(d.argmin()) - MAX_OFFSET == k and float(d.min()) < 1e-6


class Threshold(torch.nn.Module):
    """A hand-made 'expert': the lower face is bright <-> the frame's audio is loud."""

    def embed_visual(self, frames):                      # (B, 5, R, R, 3) -> (B, 2)
        on = (frames[:, 2, -8:].float().mean((1, 2, 3)) > 128).float()
        return torch.stack([on, 1 - on], -1)

    def embed_audio(self, windows):                      # (B, 20, 80): frames 8..11 are the frame's own
        on = (windows[:, 8:12].mean((1, 2)) > SILENCE / 2).float()
        return torch.stack([on, 1 - on], -1)


def blinking_clip(n, seed):
    """Frames that are bright exactly when a 700 Hz tone sounds (random on/off per frame): (frames, audio)."""
    bits = np.random.default_rng(seed).integers(0, 2, n)
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    frames[bits == 1] = 255
    t = np.arange(n * 640) / 16000
    return frames, (0.5 * np.sin(2 * np.pi * 700 * t) * np.repeat(bits, 640)).astype(np.float32)


def test_lse_finds_the_offset_of_a_shifted_clip():
    frames, audio = blinking_clip(120, 1)
    expert = Threshold()
    assert lse(expert, frames, audio)["offset"] == 0
    for k in (-10, -3, 2, 9):
        r = lse(expert, frames, shift_audio(audio, k))
        assert r["offset"] == k and r["lse_c"] > 0.25
    # another clip's audio: no clear peak
    other = lse(expert, frames, shift_audio(audio, 0)[::-1].copy())
    assert other["lse_c"] < lse(expert, frames, audio)["lse_c"]


def test_sync_expert_learns_offsets_of_unseen_identities(tmp_path):
    from conftest import run_script
    from flashsync.dataset import FrameSampler, load_clip, read_index
    from flashsync.syncnet import SyncConfig, SyncNet
    root = tmp_path / "synth"
    r = run_script("data.py", "synth", f"--out_dir={root}", "--identities=10", "--clips_per_identity=2",
                   "--seconds=3.2", "--resolution=32")
    assert r.returncode == 0, r.stderr
    torch.manual_seed(0)
    net = SyncNet(SyncConfig(width=8, dim=32))
    data = FrameSampler(str(root), "train", length=35)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        loss, _ = net.loss(data.batch(8, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    hits = total = 0
    for c in read_index(str(root))["clips"]:
        if c["split"] == "test":                          # identity 9: never seen in training
            frames, audio, _, _ = load_clip(str(root), c["name"])
            for k in range(-6, 7, 2):
                hits += abs(lse(net, np.array(frames), shift_audio(np.array(audio), k))["offset"] - k) <= 1
                total += 1
    assert hits / total >= 0.5, hits / total              # chance: about 3 / 31


def test_data_sync_measures_and_fixes_an_offset(tmp_path, monkeypatch, capsys):
    import importlib.util
    import flashsync.checkpoint
    from conftest import ROOT
    from flashsync.dataset import load_clip, write_clip, write_index
    n = 100
    frames, audio = blinking_clip(n, 2)
    root = str(tmp_path / "video")
    write_clip(root, "late", frames, shift_audio(audio, 4), {})         # audio 4 frames late
    write_clip(root, "fine", frames, audio, {})
    write_index(root, [dict(name="late", split="train", frames=n), dict(name="fine", split="train", frames=n)], 32)
    spec = importlib.util.spec_from_file_location("data_script", f"{ROOT}/data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(flashsync.checkpoint, "load_model", lambda path, kind=None: Threshold())
    script.fix = True
    script.check_sync(root)
    out = capsys.readouterr().out
    assert "| late | +4 |" in out and "audio moved -4 frames" in out and "| fine | +0 |" in out
    _, fixed, meta, _ = load_clip(root, "late")
    assert meta["audio_shift"] == -4
    assert lse(Threshold(), frames, np.array(fixed))["offset"] == 0


def test_eval_suite_runs_and_repeats_exactly(tiny_ckpts, tmp_path):
    import json
    from conftest import run_script
    data = tmp_path / "synth"
    r = run_script("data.py", "synth", f"--out_dir={data}", "--identities=20", "--clips_per_identity=2",
                   "--seconds=0.8", "--resolution=32")
    assert r.returncode == 0, r.stderr
    args = [f"--data_dir={data}", f"--ckpt={tiny_ckpts['refine'][0]},{tiny_ckpts['pose'][0]}", "--pairs=8",
            "--speech=none"]
    outs = []
    for k in range(2):
        r = run_script("flashsync/eval.py", *args, f"--out={tmp_path / f'e{k}.json'}")
        assert r.returncode == 0, r.stderr
        outs.append(json.load(open(tmp_path / f"e{k}.json")))
    assert outs[0] == outs[1]                                      # fixed seeds: the same numbers
    rows = outs[0]["suite"]
    assert set(rows) == {"FlashLips offline", "FlashLips streaming (160 ms)", "copy", "oracle"}
    assert "| copy | inf | 1.000 |" in r.stdout
    # the context rows mean it (the reader is exact to r 0.98 at 64 px, about 0.87-0.91 at these 32 px)
    assert rows["copy"]["r_source"] > 0.8 and rows["oracle"]["r_driving"] > 0.8
    assert rows["oracle"]["r_driving"] > rows["copy"]["r_driving"] + 0.2
    assert rows["copy"]["psnr"] == float("inf") and rows["oracle"]["id_psnr"] == float("inf")


def test_speech_marks_known_answers():
    """closure, opening and pause-open by their definitions (40 ms frames, spans padded by a frame)."""
    spans = metrics.phoneme_spans([["_:", 0.0], ["p", 0.20], ["a", 0.26], ["m", 0.50], ["aI", 0.58], ["_", 0.90]])
    assert spans[1] == ("p", 0.20, 0.26) and spans[-1] == ("_", 0.90, 1.0)      # the last lasts 0.1 s
    o = np.full(25, 0.5)                                     # frames of 40 ms: 1 s
    pauses = np.zeros(25, bool)
    pauses[:3] = True
    o[:5] = 0.0                                              # p (frames 5-6) spans frames 4..7: frame 4 closed
    r = metrics.speech_marks(o, spans, pauses)
    assert r["closure"] == 0.5 and r["bilabials"] == 2       # p closes (at frame 4), m (12..15+1) does not
    assert r["opening"] == 1.0 and r["open_vowels"] == 2 and r["pause_open"] == 0.0 and r["pause_frames"] == 3
    o[4] = 0.2                                               # now nothing closes near p
    o[16] = 0.1                                              # m: 0.50-0.58 s is frames 12..14, padded 11..15
    assert metrics.speech_marks(o, spans, pauses)["closure"] == 0.0
    o[15] = 0.1
    assert metrics.speech_marks(o, spans, pauses)["closure"] == 0.5
    o[6:14] = 0.25                                           # a (frames 6..12, padded 5..13) below 0.30 ...
    o[5] = 0.31                                              # ... but frame 5 is within its padded span
    assert metrics.speech_marks(o, spans, pauses)["opening"] == 1.0
    o[5] = 0.2
    assert metrics.speech_marks(o, spans, pauses)["opening"] == 0.5
    o[1] = 0.2                                               # an open mouth in a pause frame
    assert abs(metrics.speech_marks(o, spans, pauses)["pause_open"] - 1 / 3) < 1e-9


def test_pause_frames_are_three_frames_from_loud_ones():
    audio = np.zeros(20 * 640, np.float32)
    audio[8 * 640:10 * 640] = 0.5 * np.sin(np.arange(2 * 640) * 0.3)      # frames 8, 9 loud
    audio[15 * 640:16 * 640] = 0.5 * 10 ** (-36 / 20) * np.sin(np.arange(640) * 0.3)   # -36 dB: not loud
    p = metrics.pause_frames(audio)
    assert list(np.nonzero(~p)[0]) == [6, 7, 8, 9, 10, 11]


def test_speech_evaluation_on_a_folder(tiny_ckpts, tmp_path):
    """python -m flashsync.eval --speech=DIR: per-file and mean rates for FlashLips and copy, noisy rows."""
    import json
    import soundfile as sf
    from conftest import run_script
    from flashsync import speech
    data = tmp_path / "synth"
    r = run_script("data.py", "synth", f"--out_dir={data}", "--identities=20", "--clips_per_identity=2",
                   "--seconds=0.8", "--resolution=32")
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "speech"
    folder.mkdir()
    for k in range(2):                        # SynthTalk speech, written as a TTS engine would: 22.05 kHz + phonemes
        c = synth.make_clip(30 + k, 1, seconds=1.2, res=16, nsv=0.0)
        from flashsync.audio import resample
        sf.write(folder / f"s{k}.wav", resample(torch.from_numpy(c["audio"]), 16000, 22050).numpy(), 22050)
        ids = c["gt"]["phoneme"]
        names = [speech.NAMES[i] for i in ids]
        phonemes = [[{"sil": "_:", "a": "a", "ae": "a"}.get(n, n), t / 25] for t, n in enumerate(names)
                    if t == 0 or names[t - 1] != n]
        json.dump({"phonemes": phonemes}, open(folder / f"s{k}.json", "w"))
    r = run_script("flashsync/eval.py", f"--data_dir={data}", f"--ckpt={tiny_ckpts['refine'][0]},{tiny_ckpts['pose'][0]}",
                   f"--speech={folder}", "--synthtalk=false", "--lookahead=-1", "--noises=white,hum",
                   "--noise_db=-40", f"--out={tmp_path / 'e.json'}")
    assert r.returncode == 0, r.stderr
    out = json.load(open(tmp_path / "e.json"))["speech"]
    assert set(out["clean"]) == {"FlashLips offline", "copy"}
    assert set(out["clean"]["copy"]) == {"s0", "s1", "mean"}
    assert set(out["noisy"]["FlashLips offline"]) == {"white -40 dB", "hum -40 dB"}
    for rates in out["clean"]["FlashLips offline"].values():
        assert set(rates) == {"closure", "opening", "pause_open"}
        assert all(0 <= v <= 1 for v in rates.values() if v == v)
    assert "| FlashLips offline · mean |" in r.stdout and "| copy · s1 |" in r.stdout

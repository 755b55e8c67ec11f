"""KeyFace: keyframe chunking and averaging, the identity kept, each model fits a batch, emotion
schedules, the audio-event encoder."""
import math

import numpy as np
import pytest
import torch

from test_keysync import fits_one_batch, scramble

from flashsync import emotion, events, keyface
from flashsync.autoencoder import AEConfig, Autoencoder
from flashsync.events import EventConfig, EventEncoder
from flashsync.keyface import KeyFace, KeyFaceConfig
from flashsync.pose import AudioEncoder, PoseConfig
from flashsync.speech import LAUGH, SIGH, SPEECH
from flashsync.util import UserError


def tiny(interp=False, frames=3, stride=2, res=32, overlap=1, **extra):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(resolution=res, factor=4, channels=(8, 8, 16)))
    audio = AudioEncoder(PoseConfig(dim=32, audio_layers=1))
    ev = EventEncoder(EventConfig(dim=16, audio_layers=1))
    cfg = KeyFaceConfig(resolution=res, interp=interp, frames=frames, stride=stride, channels=(16, 32), audio_dim=32,
                        emb=64, overlap=overlap, **extra)
    return KeyFace(cfg, ae, audio, ev)


def batch(model, b=2, seed=0):
    """A training batch as FrameSampler gives it: random latents, SynthTalk-like emotion tracks."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    h = cfg.resolution // 4
    return dict(video_features=torch.randn(b, cfg.span, 4, h, h, generator=g),
                refs_features=torch.randn(b, 4, 4, h, h, generator=g),
                audio=0.1 * torch.randn(b, cfg.span * 640, generator=g),
                valence=torch.rand(b, cfg.span, generator=g) * 2 - 1, arousal=torch.rand(b, cfg.span, generator=g) * 2 - 1,
                label=torch.randint(0, 4, (b, cfg.span), generator=g))


# ----------------------------------------------------------------------------- long sequences

@pytest.mark.parametrize("n,size,overlap", [(8, 8, 2), (9, 8, 2), (30, 8, 2), (31, 5, 1), (100, 14, 4), (7, 3, 0)])
def test_chunks_cover_every_keyframe(n, size, overlap):
    starts = keyface.chunks(n, size, overlap)
    covered = sorted({s + i for s in starts for i in range(size)})
    assert covered == list(range(n))                         # every keyframe, none past the end
    assert starts[0] == 0 and starts[-1] + size == n
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))     # neighbours share >= overlap


def test_chunks_refuse_what_cannot_be_covered():
    with pytest.raises(ValueError):
        keyface.chunks(3, 8, 2)
    with pytest.raises(ValueError):
        keyface.chunks(10, 4, 4)


def test_joint_denoiser_averages_the_shared_frames():
    n, size = 11, 4
    starts = keyface.chunks(n, size, 2)
    wins = torch.tensor(starts)[:, None] + torch.arange(size)
    groups = list(wins.split(2))                             # two windows per network call
    calls = []

    def denoise(x, sigma, group):                            # window w says "w + 10" for every frame it holds
        calls.append(len(group))
        first = group[:, :1].float()
        w = torch.tensor([starts.index(int(s)) for s in first[:, 0]], dtype=torch.float32)
        return (w + 10)[:, None, None].expand(-1, size, 3) + 0 * x

    d = keyface.joint(denoise, groups, n)(torch.zeros(n, 3), torch.ones(n))
    expect = torch.zeros(n)
    for i in range(n):
        holders = [w for w, s in enumerate(starts) if s <= i < s + size]
        expect[i] = sum(w + 10 for w in holders) / len(holders)
    assert torch.allclose(d[:, 0], expect)
    assert calls == [len(g) for g in groups]                 # bounded batches, every window once


def test_animator_gives_every_frame_once_and_keeps_the_identity():
    key, interp = tiny(), tiny(interp=True)
    scramble(key.net)
    scramble(interp.net)
    anim = keyface.Animator(key, interp, steps=2, group=2)
    crop = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for n in (1, 2, 5, 6, 13):
        frames = list(anim.run(crop, np.zeros(n * 640, np.float32)))
        assert len(frames) == n and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    # asked to, the first keyframe is the identity image's latent exactly, and the first frame its decoding
    identity = key.encode(torch.as_tensor(crop)[None])
    feats, ev, emo = anim.conditions(np.zeros(13 * 640, np.float32), None, 13)
    keys = anim.keyframes(identity, feats, ev, emo, 13, first_is_identity=True)
    assert torch.equal(keys[0], identity[0])
    assert not torch.allclose(keys[1], identity[0])
    first = next(anim.run(crop, np.zeros(13 * 640, np.float32), first_is_identity=True))
    recon = key.ae.decode(identity)[0]
    assert np.abs(first.astype(float) - ((recon.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).numpy()).mean() < 1.0


def test_emotion_changes_the_output_and_unknown_is_its_own():
    model = tiny()
    scramble(model)
    ev, on = torch.full((1, 3, 4), 0.25), torch.ones(1, dtype=torch.bool)
    happy = model.extra(torch.tensor([[[0.9, 0.0]] * 3]), ev, on)
    sad = model.extra(torch.tensor([[[-0.64, -0.64]] * 3]), ev, on)
    unknown = model.extra(torch.full((1, 3, 2), float("nan")), ev, on)
    assert not torch.allclose(happy, sad) and not torch.allclose(happy, unknown)
    assert torch.isfinite(unknown).all()
    # without audio the events do not count either
    off = torch.zeros(1, dtype=torch.bool)
    assert torch.equal(model.extra(torch.zeros(1, 3, 2), ev, off), model.extra(torch.zeros(1, 3, 2), ev * 2, off))


def test_guidance_gives_the_emotion_to_the_full_pass_only(monkeypatch):
    """With guidance the asked emotion is in the reference + audio pass only, so s_audio guides it too;
    without guidance (one pass) it is given as it is."""
    model = tiny()
    seen = []
    extra = model.extra
    monkeypatch.setattr(model, "extra", lambda emo, ev, on: seen.append((emo.clone(), on.clone())) or extra(emo, ev, on))
    h, t = 8, 3
    args = (torch.randn(1, 4, h, h), torch.zeros(1, t, 4, h, h), torch.zeros(1, t, dtype=torch.bool),
            torch.randn(1, t, 5, 32), torch.full((1, t, 4), 0.25), torch.full((1, t, 2), 0.7))
    x, sigma = torch.randn(1, t, 4, h, h), torch.ones(1)
    model.denoiser(*args, s_audio=4.0)(x, sigma)
    emo, on = seen[-1]
    assert emo.shape[0] == 3 and on.tolist() == [False, False, True]
    assert emo[:2].isnan().all() and torch.equal(emo[2], args[-1][0])
    model.denoiser(*args, s_ref=1.0, s_audio=1.0)(x, sigma)
    assert torch.equal(seen[-1][0], args[-1])


def test_laugh_guidance_acts_on_laughs_and_sighs_only():
    """s_nsv adds s_nsv p (D_full - D_speech): zero on frames the events call speech, in proportion to the
    laugh + sigh probability elsewhere, and nothing at all (the three plain passes) in a window of speech."""
    model = tiny()
    scramble(model)
    h, t = 8, 3
    g = torch.Generator().manual_seed(1)
    ev = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.5]]])    # speech, laugh, half sigh
    args = [torch.randn(1, 4, h, h, generator=g), torch.zeros(1, t, 4, h, h), torch.zeros(1, t, dtype=torch.bool),
            torch.randn(1, t, 5, 32, generator=g), ev, torch.full((1, t, 2), float("nan"))]
    x, sigma = torch.randn(1, t, 4, h, h, generator=g), torch.ones(1)
    with torch.no_grad():
        plain = model.denoiser(*args, s_audio=4.0)(x, sigma)
        d1, d2 = (model.denoiser(*args, s_audio=4.0, s_nsv=s)(x, sigma) - plain for s in (1.0, 2.0))
        assert d1[0, 1].abs().mean() > 1e-3 and d1[0, 2].abs().mean() > 1e-3
        assert d1[0, 0].abs().max() < 0.01 * d1[0, 2].abs().mean()     # the speech frame: untouched (but rounding)
        torch.testing.assert_close(d2, 2 * d1, atol=1e-4, rtol=1e-3)   # linear in s_nsv
        args[4] = ev[:, [0, 0, 0]]                                      # speech only: the plain denoiser
        torch.testing.assert_close(model.denoiser(*args, s_audio=4.0, s_nsv=12.0)(x, sigma),
                                   model.denoiser(*args, s_audio=4.0)(x, sigma))


def test_each_model_fits_one_batch():
    for interp in (False, True):
        model = tiny(interp=interp)
        first, last = fits_one_batch(model, batch(model))
        assert last < 0.5 * first, (interp, first, last)


# ----------------------------------------------------------------------------- emotion

def test_emotion_reader_learns_from_the_truth_and_asks_the_model():
    """emo_weight > 0: the latent reader's own loss trains the reader on the true latents only, and the
    asked-emotion term trains the model only (through a frozen reader), where an emotion is asked, a
    frame is generated and is not a laugh or a sigh, outside the mouth and eye boxes; diffusion.loss adds it on
    its estimate of x0."""
    model = tiny(emo_weight=1.0)
    b = batch(model)
    x0 = b["video_features"][:, model.cfg.positions()]
    truth = torch.stack([b["valence"], b["arousal"]], -1)[:, model.cfg.positions()]
    known = torch.zeros(x0.shape[:2], dtype=torch.bool)
    known[:, 0] = True
    asked = torch.full_like(truth, 0.5)
    asked[1] = float("nan")                                 # the second window dropped its emotion
    nsv = torch.zeros(x0.shape[:2], dtype=torch.bool)
    nsv[0, 2] = True                                        # a laugh (or near one) is the audio's, not the emotion's
    aux = model.emotion_aux(x0, truth, asked, known, nsv)
    d = x0.clone().requires_grad_()
    low, high = torch.tensor([0.5, 0.5]), torch.tensor([2.0, 2.0])
    own = aux(d, high)                                      # σ >= 1: the reader's own loss only
    read = model.reader(x0.flatten(0, 1)).unflatten(0, x0.shape[:2])
    assert torch.allclose(own, ((read - truth) ** 2).sum(-1).mean())
    g = torch.autograd.grad(aux(d, low) - own, d, allow_unused=True)[0]
    assert g[0, 1].abs().sum() > 0                          # a generated frame of the window that asked
    assert g[0, 0].abs().sum() == 0 and g[1].abs().sum() == 0     # not the known frame, not the dropped window
    assert g[0, 2].abs().sum() == 0                         # not the laugh
    spared = (model.mouth[0] > 0) | (model.eyes[0] > 0)     # (h, w): sync's cells and the lids', which it leaves alone
    assert g[0, 1][:, spared].abs().sum() == 0 and g[0, 1][:, ~spared].abs().sum() > 0
    grads = torch.autograd.grad(aux(d, low) - own, list(model.reader.parameters()), allow_unused=True)
    assert all(x is None or x.abs().sum() == 0 for x in grads)      # the asking term leaves the reader alone
    loss, _ = model.loss(b)                                 # and the whole loss runs with it
    assert torch.isfinite(loss)


def test_eyes_weigh_more_in_the_loss(monkeypatch):
    """eyes_weight: the generated frames' eye and brow cells weigh 1 + eyes_weight in the diffusion loss, the
    mouth's 1 + mouth_weight, the rest 1, known frames 0."""
    model = tiny(eyes_weight=4.0)
    seen = {}

    def spy(*args, weight=None, **kw):
        seen["w"] = weight
        return torch.zeros(())
    monkeypatch.setattr(keyface.diffusion, "loss", spy)
    model.cfg.p_first = 1.0                                 # the first keyframe given: weight 0 there
    model.loss(batch(model))
    w = seen["w"].expand(2, model.cfg.frames, 1, *model.eyes.shape[1:])[:, :, 0]      # (B, T, h, w)
    eyes, mouth = model.eyes[0] > 0, model.mouth[0] > 0
    assert eyes.any() and not (eyes & mouth).any()
    assert (w[:, 0] == 0).all()
    assert (w[:, 1:, eyes] == 5).all() and (w[:, 1:, mouth] == 1 + model.cfg.mouth_weight).all()
    assert (w[:, 1:, ~(eyes | mouth)] == 1).all()


def test_frames_near_a_laugh_or_a_sigh_ask_no_emotion():
    label = torch.full((2, 40), SPEECH)
    label[0, 20:23] = SIGH
    label[1, 0] = LAUGH
    near = keyface.near_nsv(label)
    m = keyface.NSV_MARGIN
    assert near[0, 20 - m:23 + m].all() and not near[0, :20 - m].any() and not near[0, 23 + m:].any()
    assert near[1, :m + 1].all() and not near[1, m + 1:].any()


def test_emotion_table_and_schedules():
    assert emotion.lookup("Happy") == emotion.EMOTIONS["happy"]
    for name in ("happy", "sad", "angry", "calm", "surprised", "neutral"):
        v, a = emotion.EMOTIONS[name]
        assert abs(v) <= 1 and abs(a) <= 1
    assert emotion.EMOTIONS["happy"][0] > 0.5 and emotion.EMOTIONS["sad"][0] < -0.5 < emotion.EMOTIONS["angry"][1]
    assert emotion.EMOTIONS["calm"][1] < -0.5 and emotion.EMOTIONS["surprised"][1] > 0.5
    assert emotion.track(10) is None                          # nothing asked: the model's "unknown"
    t = emotion.track(250, "0:neutral,4:happy,8:sad")        # 10 s at 25 fps
    hv, sv = emotion.EMOTIONS["happy"], emotion.EMOTIONS["sad"]
    assert np.allclose(t[0], 0) and np.allclose(t[100], hv) and np.allclose(t[200:], sv)
    assert np.allclose(t[50], np.array(hv) / 2)              # linear in between
    assert np.allclose(emotion.track(5, "sad", accentuate=1.5), np.array(sv) * 1.5)
    v = emotion.track(5, "happy", arousal=0.5)
    assert np.allclose(v[:, 0], hv[0]) and np.allclose(v[:, 1], 0.5)
    assert np.allclose(emotion.track(3, valence=-0.2), [[-0.2, 0.0]] * 3)


@pytest.mark.parametrize("spec,words", [("hapy", "did you mean happy"), ("0:neutral,4:sadd", "did you mean sad"),
                                        ("0:happy,sad", "seconds:name"), ("x:happy", "seconds:name"),
                                        ("0:happy,4:", "seconds:name"), ("4:happy,2:sad", "times must increase"),
                                        ("zzzzzz", "known:")])
def test_emotion_errors_are_one_clear_line(spec, words):
    with pytest.raises(UserError) as e:
        emotion.track(10, spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_valence_out_of_range_is_refused():
    with pytest.raises(UserError, match="from -1 to 1"):
        emotion.track(5, valence=2.0)
    with pytest.raises(UserError):
        emotion.track(5, arousal=math.nan)


# ----------------------------------------------------------------------------- audio events

def test_event_encoder_learns_laughs_from_silence():
    """Laugh-like bursts (loud, voiced, 5 Hz pulses) vs. silence vs. steady tones: the encoder names them."""
    torch.manual_seed(0)
    model = EventEncoder(EventConfig(dim=32, audio_layers=1, augment=False))
    g = torch.Generator().manual_seed(0)
    t = torch.arange(20 * 640) / 16000

    def clip(kind):
        label = torch.zeros(20, dtype=torch.long)
        x = torch.zeros_like(t)
        a, b = sorted(torch.randint(0, 21, (2,), generator=g).tolist())
        b = max(b, a + 6) if a + 6 <= 20 else 20
        seg = slice(a * 640, b * 640)
        f0 = 150 + 100 * torch.rand(1, generator=g)
        if kind == "laugh":
            x[seg] = 0.3 * torch.sin(2 * math.pi * f0 * t[seg]) * (torch.sin(2 * math.pi * 5 * t[seg]) > 0)
            label[a:b] = events.LAUGH
        else:
            x[seg] = 0.3 * torch.sin(2 * math.pi * f0 * t[seg])
            label[a:b] = events.SPEECH
        return x, label

    data = [clip("laugh" if i % 2 else "speech") for i in range(16)]
    audio, label = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, stats = model.loss(dict(audio=audio, label=label))
        opt.zero_grad()
        loss.backward()
        opt.step()
    per, confusion = events.accuracy(model.eval(), [dict(audio=a.numpy(), gt=dict(label=l.numpy())) for a, l in data])
    assert confusion.sum() == label.numel()
    assert per["silence"] > 0.9 and per["speech"] > 0.8 and per["laugh"] > 0.8, per
    assert math.isnan(per["sigh"])                          # no sigh frames: no accuracy, not a zero


# ----------------------------------------------------------------------------- train.py and sample.py

def test_train_keyface_checkpoints_round_trip(tiny_keyface, tiny_ckpts):
    from flashsync.checkpoint import load_checkpoint, load_model
    key, interp = load_checkpoint(tiny_keyface["key"], "keyface"), load_checkpoint(tiny_keyface["interp"], "keyface")
    assert key["step"] == 2 and not key["config"]["interp"] and interp["config"]["interp"]
    model = load_model(tiny_keyface["key"], "keyface")
    assert (model.cfg.frames, model.cfg.stride, model.cfg.length) == (3, 2, 3)
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, key["ema"]["net." + k])
    # the frozen parts: the pose model's audio encoder and the event encoder that was trained
    pose, ev = load_model(tiny_ckpts["pose"][0], "pose"), load_model(tiny_keyface["events"], "events")
    assert all(torch.equal(a, b) for a, b in zip(model.audio.state_dict().values(),
                                                  pose.flow.audio.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(model.events.state_dict().values(), ev.state_dict().values()))


def test_keyface_table_reads_laughs_and_sighs_on_event_rich_speech(tiny_keyface, tiny_data):
    """python -m flashsync.eval's KeyFace table on the tiny models: NSV is read on dedicated laugh- and sigh-rich
    speech (frames of both events to count, not the handful the sync clips hold), beside the reader's own
    readings of the speakers' frames and of their autoencoder reconstructions (what the latents can show)."""
    from flashsync.eval import load_test
    from flashsync.eval_video import keyface_tables
    clips = load_test(tiny_data)                            # one test identity; its speech as another's too
    clips += [dict(c, meta=dict(c["meta"], identity=c["meta"]["identity"] + 10)) for c in clips]
    out = keyface_tables(tiny_keyface["key"], tiny_keyface["interp"], clips, steps=1, seconds=2,
                         n_sync=1, n_emotion=1, emotion_seconds=1, n_nsv=2, nsv_seconds=8.0)
    frames = out["nsv frames"]
    assert frames["laugh"] >= 20 and frames["sigh"] >= 20, frames
    for k in ("nsv", "nsv (reader on the speakers' own frames)", "nsv (reader on their autoencoder reconstructions)"):
        assert set(out[k]) == {"other", "laugh", "sigh"} and all(0 <= v <= 1 for v in out[k].values()), out[k]
    assert "sync_r" in out and len(out["drift (keyframes)"]["buckets"]) == 1      # 2 s: one bucket

def kf_args(tiny_keyface):
    return ["--method=keyface", f"--keyface_key={tiny_keyface['key']}", f"--keyface_interp={tiny_keyface['interp']}",
            "--ks_steps=2"]


@pytest.fixture(scope="module")
def kf_inputs(tmp_path_factory):
    import soundfile as sf
    from flashsync import synth
    from flashsync.video import write_png
    d = tmp_path_factory.mktemp("kf_inputs")
    picture = np.full((112, 128, 3), 90, np.uint8)                   # a face at (16, 8, 96, 96) in a larger image
    picture[8:104, 16:112] = synth.make_clip(9, 0, seconds=0.4, res=96)["video"][0]
    write_png(str(d / "face.png"), picture)
    sf.write(d / "speech.wav", synth.make_clip(19, 1, seconds=1.0)["audio"], 16000)
    return d


def test_sample_keyface_end_to_end(tiny_keyface, kf_inputs, tmp_path):
    from conftest import run_script
    from test_sample import audio_stream
    from flashsync.audio import load_audio
    from flashsync.video import probe, read_frames
    out = tmp_path / "out.mp4"
    r = run_script("sample.py", f"--image={kf_inputs / 'face.png'}", f"--audio={kf_inputs / 'speech.wav'}",
                   "--box=16,8,96,96", f"--out={out}", "--emotion=0:neutral,0.5:happy", "--accentuate=1.5",
                   *kf_args(tiny_keyface))
    assert r.returncode == 0, r.stderr
    assert "frame 25/25" in r.stderr and "KeyFace" in r.stdout
    info = probe(str(out))
    assert (info.width, info.height, info.frames) == (128, 112, 25) and info.has_audio
    assert audio_stream(str(out)) == ("aac", 16000)
    assert abs(len(load_audio(str(out))) / 16000 - 1.0) <= 1 / 25
    # outside the face box every pixel is the image's (up to the codec)
    frames = np.stack(list(read_frames(str(out)))).astype(int)
    picture = np.stack(list(read_frames(str(kf_inputs / "face.png"))))[0].astype(int)
    assert np.abs(frames[:, :, :14] - picture[:, :14]).mean() < 2.0
    assert np.abs(frames[:, 106:] - picture[106:]).mean() < 2.0


@pytest.mark.parametrize("change, message", [
    (dict(emotion="hapy"), "did you mean happy"),
    (dict(emotion="0:happy,x:sad"), "is not seconds:name"),
    (dict(emotion="4:happy,2:sad"), "times must increase"),
    (dict(valence="3"), "--valence=3.0: give a number from -1 to 1"),
    (dict(keyface_key="interp"), "--keyface_key needs the keyframe model"),
    (dict(keyface_interp="refine"), "holds a 'refine' model, not KeyFace's"),
    (dict(image="missing.png"), "not found"),
    (dict(method="keyfaces"), "use flashlips, keysync or keyface"),
])
def test_sample_keyface_bad_input_is_one_line_and_no_file(tiny_keyface, tiny_ckpts, kf_inputs, tmp_path, change,
                                                         message):
    from conftest import run_script
    args = dict(image=str(kf_inputs / "face.png"), audio=str(kf_inputs / "speech.wav"), out=str(tmp_path / "out.mp4"),
                method="keyface", keyface_key=tiny_keyface["key"], keyface_interp=tiny_keyface["interp"])
    for k, v in change.items():
        args[k] = (tiny_ckpts[v][0] if v == "refine" else tiny_keyface[v] if v == "interp" else
                   str(kf_inputs / v) if k == "image" else v)
    r = run_script("sample.py", *[f"--{k}={v}" for k, v in args.items()])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []

"""KeySync: replacement keeps everything outside the edit mask, interpolation keeps its endpoints,
each model can fit a batch, and the backbone's shapes."""
import numpy as np
import pytest
import torch

from conftest import run_script

from flashsync import diffusion, keysync
from flashsync.autoencoder import AEConfig, Autoencoder
from flashsync.keysync import KeySync, KeySyncConfig
from flashsync.nn import to_float
from flashsync.pose import AudioEncoder, PoseConfig


def tiny(interp=False, frames=3, stride=2, res=32):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(resolution=res, factor=4, channels=(8, 8, 16)))
    audio = AudioEncoder(PoseConfig(dim=32, audio_layers=1))
    cfg = KeySyncConfig(resolution=res, interp=interp, frames=frames, stride=stride, channels=(16, 32), audio_dim=32)
    return KeySync(cfg, ae, audio)


def scramble(net):
    """Random values in the zero-initialised layers, which would otherwise hide what the inputs do."""
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.3)


def batch(model, b=2, seed=0):
    """A training batch as FrameSampler gives it, made of random latents."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    r = cfg.resolution
    h = r // 4
    occ = torch.zeros(b, cfg.span, r, r, dtype=torch.bool)
    occ[:, :, r // 2:, : r // 3] = True                          # a hand from the lower left
    return dict(video_features=torch.randn(b, cfg.span, 4, h, h, generator=g),
                video=torch.randint(0, 256, (b, cfg.span, r, r, 3), dtype=torch.uint8, generator=g),
                refs_features=torch.randn(b, 4, 4, h, h, generator=g),
                audio=0.1 * torch.randn(b, cfg.span * 640, generator=g), occluder=occ)


def test_edit_mask_is_lower_face_and_not_occluder():
    h = 16
    m = keysync.edit_mask(None, h)
    assert m.shape == (1, h, h) and m[0, 0].sum() == 0 and m[0, -1].sum() > 0      # no edit above the nose line
    occ = torch.zeros(2, 64, 64, dtype=torch.bool)
    occ[1, 60:, 10:14] = True                                     # 4 px wide: touches one or two latent cells
    m = keysync.edit_mask(occ, h)
    assert m.shape == (2, 1, h, h)
    assert torch.equal(m[0], keysync.edit_mask(None, h))
    assert m[1, 0, -1, 2:4].sum() == 0 and m[1, 0, -1, 5] == 1


def test_backbone_shapes_and_null_audio():
    model = tiny()
    net = model.net
    b, t, h = 2, 3, 8
    x = torch.randn(b, t, 14, h, h)
    audio = torch.randn(b, t, 5, 32)
    keep = torch.tensor([True, False])
    out = net(x, torch.zeros(b), audio, keep, torch.arange(t))
    assert out.shape == (b, t, 4, h, h)
    # a sample without audio ignores the audio it was given
    with torch.no_grad():
        scramble(net)
        a = net(x, torch.zeros(b), audio, keep, torch.arange(t))
        c = net(x, torch.zeros(b), torch.randn_like(audio), keep, torch.arange(t))
    assert torch.equal(a[1], c[1]) and not torch.allclose(a[0], c[0])


def test_outside_the_mask_the_latent_is_the_source_at_every_step(monkeypatch):
    model = tiny().eval()
    scramble(model.net)                                           # a network that changes everything it sees
    t, h = 3, 8
    g = torch.Generator().manual_seed(3)
    source = torch.randn(1, t, 4, h, h, generator=g)
    occ = torch.zeros(t, 32, 32, dtype=torch.bool)
    occ[:, 24:, 8:16] = True
    mask = keysync.edit_mask(occ, h)[None]                        # (1, T, 1, h, w)
    seen = []
    denoise = diffusion.denoise

    def spy(net, x, sigma, cfg, **cond):
        seen.append(x.clone())
        d = denoise(net, x, sigma, cfg, **cond)
        seen.append(d.clone())
        return d
    monkeypatch.setattr(keysync.diffusion, "denoise", spy)
    out = model.sample(source, mask, torch.randn(1, 4, h, h), torch.randn(1, t, 5, 32),
                       torch.zeros(1, t, dtype=torch.bool), torch.randn(1, t, 4, h, h, generator=g), steps=4,
                       s_ref=1.5, s_audio=2.0)
    assert len(seen) == 8
    outside = 1 - mask
    for x in seen[::2]:                                           # every network input: the source outside, exactly
        for part in x.chunk(3):                                   # (the three guidance passes)
            assert torch.equal(part * outside, source * outside)
    assert torch.equal(out * outside, source * outside)
    assert not torch.allclose(out * mask, source * mask)           # and inside, it did edit
    # the raw network output is not the source outside the mask: the equality is the replacement's doing
    assert not torch.equal(seen[1][:1] * outside, source * outside)


def test_interpolation_keeps_its_endpoints():
    model = tiny(interp=True).eval()
    scramble(model.net)
    s, h = model.cfg.stride, 8
    g = torch.Generator().manual_seed(4)
    source = torch.randn(2, s + 1, 4, h, h, generator=g)
    known = torch.zeros(2, s + 1, dtype=torch.bool)
    known[:, [0, -1]] = True
    mask = keysync.edit_mask(None, h).expand(2, s + 1, 1, h, h)
    ref, audio, noise = torch.randn(2, 4, h, h), torch.randn(2, s + 1, 5, 32), torch.randn(2, s + 1, 4, h, h, generator=g)
    for start in (0, 7):                # from noise, and from the endpoints blended over time (the Dubber's)
        out = model.sample(source, mask, ref, audio, known, noise, steps=10, start=start)
        assert torch.equal(out[:, 0], source[:, 0]) and torch.equal(out[:, -1], source[:, -1])
        assert not torch.allclose(out[:, 1:-1], source[:, 1:-1])
    # started from the blend, every in-between frame lies near it: the keyframes fix the motion
    w = torch.linspace(0, 1, s + 1)[None, :, None, None, None]
    blend = (1 - w) * source[:, :1] + w * source[:, -1:]
    near = (out - blend).abs().mean() / (source[:, 1:-1] - blend[:, 1:-1]).abs().mean()
    assert near < 0.5, near


def fits_one_batch(model, data, steps=120):
    """Train on one batch -> (mean loss before, after), each over the same 8 draws of noise and dropout."""
    # noise levels where the answer is the batch's content, not the noise (at σ -> 0 the target is
    # the noise itself, which no network memorises quickly)
    model.cfg.edm.p_mean = 1.0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(0)
    first = sum(float(model.loss(data)[0].detach()) for _ in range(8)) / 8
    for _ in range(steps):
        loss, _ = model.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(0)
    return first, sum(float(model.loss(data)[0].detach()) for _ in range(8)) / 8


def test_pose_features_are_the_encoder_and_the_sampled_poses():
    from flashsync.backbone import PoseFeatures
    from flashsync.pose import PoseFlow
    torch.manual_seed(0)
    flow = PoseFlow(PoseConfig(dim=32, audio_layers=1, flow_layers=1, audio_drop=0.3)).eval()
    scramble(flow)
    flow.std.fill_(2.0)
    feats = PoseFeatures(flow, steps=3)
    mel = torch.randn(2, 40, 80)                                   # 10 video frames
    out = feats(mel)
    assert out.shape == (2, 10, 32 + 12)
    assert torch.equal(out[..., :32], flow.features(mel))
    # the poses: the guided flow from zero, no reference poses, normalised; the same every call
    poses = flow.sample(mel, flow.mean.expand(2, 4, -1), 10, 3, noise=torch.zeros(2, 10, 12), guidance=3.0)
    assert torch.allclose(out[..., 32:], (poses - flow.mean) / flow.std)
    assert torch.equal(feats(mel), out)
    assert not torch.allclose(feats(torch.randn(2, 40, 80))[..., 32:], out[..., 32:], atol=1e-3)


def test_training_on_the_frames_own_poses():
    """p_true: in those windows the pose columns are the lips encoder's reading of the window's frames
    (normalised as the flow's samples), the audio columns untouched; p_true 0 changes nothing."""
    from flashsync.backbone import PoseFeatures
    from flashsync.editor import LipsEncoder
    from flashsync.pose import PoseFlow
    model = tiny()
    flow = PoseFlow(PoseConfig(dim=32, audio_layers=1, flow_layers=1)).eval()
    scramble(flow)
    lips = LipsEncoder().eval()
    model.audio = PoseFeatures(flow, steps=2, lips=lips)
    b = batch(model)
    plain = model.features(b["audio"])
    assert torch.equal(model.train_features(b["audio"], None, 0.0), plain)
    own = model.train_features(b["audio"], b["video"], 1.0, noise=0.0)
    frames = to_float(b["video"].flatten(0, 1))
    want = ((lips(frames) - flow.mean) / flow.std).unflatten(0, (2, model.cfg.span))
    assert torch.equal(own[..., :32], plain[..., :32])
    assert torch.allclose(own[..., 32:], want, atol=1e-5)
    assert not torch.allclose(own[..., 32:], plain[..., 32:], atol=1e-3)


def test_shared_noise_keeps_unit_variance_and_correlates_frames():
    e = torch.randn(4000, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(diffusion.shared_noise(e, 0.0, 1), e)
    x = diffusion.shared_noise(e, 0.8, 1)
    # per frame still N(0, 1) over draws of the frame's own noise; the same seed, the same common part
    assert abs(float(x.std()) - 1) < 0.1
    assert torch.equal(x, diffusion.shared_noise(e, 0.8, 1))
    r = torch.corrcoef(torch.stack([(x[:, 0] - x[:, 0].mean(0)).flatten(), (x[:, 1] - x[:, 1].mean(0)).flatten()]))
    assert abs(float(r[0, 1])) < 0.05                        # frames' own parts independent
    d = (x[:, 0] - x[:, 1]).var()                             # frames differ by their own parts only: 2 (1 - 0.8)
    assert abs(float(d) - 0.4) < 0.02


def test_each_model_fits_one_batch():
    for interp in (False, True):
        model = tiny(interp=interp)
        first, last = fits_one_batch(model, batch(model))
        assert last < 0.5 * first, (interp, first, last)


# ----------------------------------------------------------------------------- train.py and sample.py

def ks_args(tiny_keysync):
    return ["--method=keysync", f"--keyframes={tiny_keysync['key']}", f"--interp={tiny_keysync['interp']}",
            f"--segmenter={tiny_keysync['occluder']}"]


def test_train_keysync_checkpoints_round_trip(tiny_keysync, tiny_ckpts):
    from flashsync.checkpoint import load_checkpoint, load_model
    from flashsync.occluder import Segmenter
    key, interp = load_checkpoint(tiny_keysync["key"], "keysync"), load_checkpoint(tiny_keysync["interp"], "keysync")
    assert key["step"] == 2 and not key["config"]["interp"] and interp["config"]["interp"]
    model = load_model(tiny_keysync["key"], "keysync")
    assert (model.cfg.frames, model.cfg.stride, model.cfg.length, model.cfg.span) == (3, 2, 3, 5)
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, key["ema"]["net." + k])
    # the frozen audio features are the pose model's (the keyframe model's with its sampled lips poses:
    # --ks_poses=True), the autoencoder the one under it
    pose = load_model(tiny_ckpts["pose"][0], "pose")
    assert model.cfg.audio_dim == pose.flow.cfg.dim + pose.flow.cfg.lips_dim
    assert all(torch.equal(a, b) for a, b in zip(model.audio.flow.state_dict().values(),
                                                  pose.flow.state_dict().values()))
    bare = load_model(tiny_keysync["interp"], "keysync")
    assert bare.cfg.audio_dim == pose.flow.cfg.dim and isinstance(bare.audio, type(pose.flow.audio))
    assert isinstance(load_model(tiny_keysync["occluder"], "occluder"), Segmenter)


def test_sample_keysync_end_to_end(tiny_keysync, tmp_path):
    from test_sample import BOX, audio_stream, codec_noise, source_video
    from flashsync import synth
    from flashsync.audio import load_audio
    from flashsync.video import probe, read_frames
    import numpy as np
    import soundfile as sf
    source_video(str(tmp_path / "in.mp4"))                           # 25 frames, face at BOX
    decoded = np.stack(list(read_frames(str(tmp_path / "in.mp4"))))
    speech = synth.make_clip(19, 1, seconds=1.6)["audio"]            # 40 frames: forwards, then backwards
    sf.write(tmp_path / "speech.wav", speech, 16000)
    out = tmp_path / "out.mp4"
    r = run_script("sample.py", "--video", str(tmp_path / "in.mp4"), "--audio", str(tmp_path / "speech.wav"),
                   "--box", ",".join(map(str, BOX)), "--out", str(out), *ks_args(tiny_keysync))
    assert r.returncode == 0, r.stderr
    assert "frame 40/40" in r.stderr and "KeySync" in r.stdout
    info = probe(str(out))
    assert (info.width, info.height, info.frames) == (128, 112, 40) and info.has_audio
    assert audio_stream(str(out)) == ("aac", 16000)
    assert abs(len(load_audio(str(out))) / 16000 - 1.6) <= 1 / 25
    # above the lower face (and around the box) every pixel is the source's, up to the codec
    frames = np.stack(list(read_frames(str(out))))
    order = list(range(25)) + list(range(23, 8, -1))
    expect = decoded[order]
    plain = codec_noise(expect, str(tmp_path / "plain.mp4"))
    x, y, s = BOX[0], BOX[1], BOX[2]
    top = y + int(0.5 * s)                                           # the lower face starts at 0.56 of the box
    diff = np.abs(frames[:, :top].astype(int) - expect[:, :top]).mean()
    floor = np.abs(plain[:, :top].astype(int) - expect[:, :top]).mean()
    assert diff < floor + 0.3, (diff, floor)


@pytest.fixture(scope="module")
def ks_inputs(tmp_path_factory):
    import numpy as np
    import soundfile as sf
    from test_sample import source_video
    from flashsync import synth
    from flashsync.video import VideoWriter
    d = tmp_path_factory.mktemp("ks_inputs")
    source_video(str(d / "in.mp4"), seconds=0.4)                    # 10 frames of 128 x 112
    sf.write(d / "speech.wav", synth.make_clip(19, 1, seconds=0.4)["audio"], 16000)
    for name, n, w, h in (("masks.mp4", 10, 128, 112), ("short.mp4", 6, 128, 112), ("small.mp4", 10, 64, 56)):
        with VideoWriter(str(d / name), w, h) as wr:
            for _ in range(n):
                wr.write(np.zeros((h, w, 3), np.uint8))
    return d


@pytest.mark.parametrize("change, message", [
    (dict(occluder_masks="short.mp4"), "6 masks for 10 video frames"),
    (dict(occluder_masks="small.mp4"), "masks are 64x56, the video is 128x112"),
    (dict(occluder_masks="missing.mp4"), "occluder mask file not found"),
    (dict(keyframes="refine"), "holds a 'refine' model, not KeySync's"),
    (dict(interp="key"), "--interp needs the interpolation model"),
    (dict(method="wav2lip"), "--method=wav2lip: use flashlips, keysync or keyface"),
])
def test_sample_keysync_bad_input_is_one_line_and_no_file(tiny_keysync, tiny_ckpts, ks_inputs, tmp_path, change,
                                                         message):
    args = dict(video=str(ks_inputs / "in.mp4"), audio=str(ks_inputs / "speech.wav"), box="16,8,96,96",
                out=str(tmp_path / "out.mp4"), method="keysync", keyframes=tiny_keysync["key"],
                interp=tiny_keysync["interp"], segmenter=tiny_keysync["occluder"])
    for k, v in change.items():
        args[k] = (tiny_ckpts[v][0] if v == "refine" else tiny_keysync[v] if v == "key" else
                   str(ks_inputs / v) if k == "occluder_masks" else v)
    r = run_script("sample.py", *[f"--{k}={v}" for k, v in args.items()])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_sample_keysync_keeps_what_the_mask_file_covers(tiny_keysync, ks_inputs, tmp_path):
    """An occluder mask over the whole frame: nothing may change anywhere."""
    import numpy as np
    from test_sample import codec_noise
    from flashsync.video import VideoWriter, read_frames
    with VideoWriter(str(tmp_path / "all.mp4"), 128, 112) as w:
        for _ in range(10):
            w.write(np.full((112, 128, 3), 255, np.uint8))
    out = tmp_path / "out.mp4"
    r = run_script("sample.py", f"--video={ks_inputs / 'in.mp4'}", f"--audio={ks_inputs / 'speech.wav'}",
                   "--box=16,8,96,96", f"--out={out}", f"--occluder_masks={tmp_path / 'all.mp4'}",
                   *ks_args(tiny_keysync))
    assert r.returncode == 0, r.stderr
    frames = np.stack(list(read_frames(str(out))))
    src = np.stack(list(read_frames(str(ks_inputs / "in.mp4"))))
    plain = codec_noise(src, str(tmp_path / "plain.mp4"))
    assert np.abs(frames.astype(int) - src).mean() < np.abs(plain.astype(int) - src).mean() + 0.2


def test_dubber_keeps_the_decoded_source_outside_the_edit_mask():
    """The decoder spreads the regenerated lower face a few pixels past the edit mask; the Dubber's
    frames take the source's decoded pixels outside it (the mask's feathered edge), occluder included,
    and its own inside."""
    key, interp = tiny(), tiny(interp=True)
    for m in (key, interp):
        scramble(m.net)
    dub = keysync.Dubber(key, interp, steps=2)
    g = torch.Generator().manual_seed(0)
    n, r = 9, 32
    crops = torch.randint(0, 256, (n, r, r, 3), generator=g, dtype=torch.uint8).numpy()
    occ = torch.zeros(n, r, r, dtype=torch.bool)
    occ[:, 26:, 4:12] = True                                       # a hand at the lower left of the box
    dub.set_reference(crops[0])
    got = list(dub.run(iter(crops), iter(occ.numpy()), 0.1 * torch.randn(n * 640, generator=g).numpy()))
    assert len(got) == n
    out, recon = (torch.as_tensor(np.stack(a)).float() for a in zip(*[(o, c) for _, o, c in got]))   # (n, R, R, 3)
    m = keysync.pixel_mask(keysync.edit_mask(occ, r // 4), r)[:, 0]                     # (n, R, R)
    assert 0.1 < float((m == 0).float().mean()) < 0.9 and bool(occ[0, 28, 6]) and float(m[0, 28, 6]) == 0
    assert torch.equal(out[m == 0], recon[m == 0])
    assert float((out[m == 1] - recon[m == 1]).abs().mean()) > 1.0

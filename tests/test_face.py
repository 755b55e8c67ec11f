import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flashsync import face, metrics, synth
from flashsync.util import UserError


def test_parse_and_check_box():
    assert face.parse_box("176,140,208,208") == (176, 140, 208, 208)
    for bad in ("1,2,3", "a,b,c,d", "1,2,0,5", ""):
        with pytest.raises(UserError):
            face.parse_box(bad)
    face.check_box((10, 10, 50, 50), 100, 100)
    face.check_box((-10, 60, 50, 50), 100, 100)                 # partly outside: padded
    face.check_box((90, 90, 50, 50), 100, 100)                  # mostly outside: padded, with a warning
    for outside in ((100, 10, 50, 50), (-50, 10, 50, 50), (10, -60, 50, 50)):
        with pytest.raises(UserError, match="lies outside the 100x100 frame"):
            face.check_box(outside, 100, 100)


def test_regions_are_inside_the_crop():
    for frac in (face.LOWER_FACE, face.MOUTH):
        x0, y0, x1, y1 = face.region(frac, 64)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    m = face.region_mask(face.LOWER_FACE, 64)
    assert m.sum() == (face.region(face.LOWER_FACE, 64)[2] - face.region(face.LOWER_FACE, 64)[0]) * \
        (64 - face.region(face.LOWER_FACE, 64)[1])


def test_paste_touches_only_what_the_edit_changed_around_the_mouth():
    rng = np.random.default_rng(0)
    frame = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    box = (40, 20, 80, 80)
    crop = face.crop(frame, box, 64)
    assert crop.shape == (64, 64, 3)
    # the autoencoder's own small errors (recon vs edit differ by 2 grey levels everywhere): nothing pasted
    noisy = np.clip(crop.astype(int) + rng.integers(-2, 3, crop.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(face.paste(frame, noisy, box, crop), frame)
    # a new dark mouth: pasted at the frame's resolution, nothing outside face.PASTE changes
    edited = crop.copy()
    x0, y0, x1, y1 = face.region(face.MOUTH, 64)
    edited[y0 + 4:y1 - 4, x0 + 4:x1 - 4] = 10
    out = face.paste(frame, edited, box, crop)
    changed = np.any(out != frame, axis=-1)
    px0, py0, px1, py1 = face.region(face.PASTE, 80)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 20 + py0 and ys.max() < 20 + py1 and xs.min() >= 40 + px0 and xs.max() < 40 + px1
    cy, cx = 20 + (y0 + y1) * 80 // 128, 40 + 40
    assert (out[cy - 2:cy + 3, cx - 8:cx + 9] < 40).all()                  # the edit's mouth replaced the source
    # a box hanging over the frame edge: pasted where it lies inside, nothing else moves
    assert face.crop(frame, (-20, -20, 60, 60), 32).shape == (32, 32, 3)
    edge = (120, 50, 60, 60)                                                 # x 120..180 in a 160 wide frame
    c = face.crop(frame, edge, 32)
    e = c.copy()
    e[18:26, 10:22] = 0
    out = face.paste(frame, e, edge, c)
    assert out.shape == frame.shape and (out[90, 150:158] < 40).all()
    assert np.array_equal(out[:80], frame[:80]) and np.array_equal(out[:, :130], frame[:, :130])


def _talking(mouth_open, res, seconds=0.4):
    """SynthTalk identity 9 with its mouth held open or shut (and head motion)."""
    n = int(seconds * 25)
    m = dict(open=np.full(n, 1.0 if mouth_open else 0.0), width=np.full(n, 0.7), round=np.zeros(n),
             teeth=np.full(n, 0.5 if mouth_open else 0.0))
    return synth.make_clip(9, 0, seconds=seconds, res=res, mouth=m)


@pytest.mark.parametrize("source_open", [True, False])
def test_paste_replaces_the_mouth_and_keeps_the_rest_sharp(source_open):
    """A perfect 64 px edit (SynthTalk re-rendered with the other mouth) pasted into 256 px frames:
    the pasted mouth is the edit's (nothing of the old one shows through), the lower face outside
    the mouth is the source's, and the lower face stays as sharp as the source."""
    src = _talking(source_open, 256)
    edit = _talking(not source_open, 64)["video"]
    truth = _talking(not source_open, 256)["video"]                  # what a native 256 px edit would be
    box = (0, 0, 256, 256)
    recon = np.stack([face.crop(f, box, 64) for f in src["video"]])      # an autoencoder that loses nothing
    out = np.stack([face.paste(f, e, box, r) for f, e, r in zip(src["video"], edit, recon)])
    opening, want = synth.read_mouth(out)["open"], synth.read_mouth(truth)["open"]
    if source_open:                                   # shut: reads as the native shut mouth, no ghost of the old
        assert np.abs(opening - want).max() < 0.05 and (synth.read_mouth(src["video"])["open"] > 0.6).all()
    else:
        assert (opening > 0.6).all(), opening
    q = metrics.paste_quality(out, truth, src["gt"]["lower_face_box"], src["gt"]["mouth_box"])
    assert q["outside_mouth_db"] > 45 and q["sharpness"] > 0.9, q        # outside the mouth: truth = source


def test_tracker_follows_a_moving_face():
    rng = np.random.default_rng(1)
    texture = (rng.random((60, 60, 3)) * 255).astype(np.uint8)
    texture = torch.nn.functional.avg_pool2d(torch.from_numpy(texture).permute(2, 0, 1).float(), 5, 1, 2)
    texture = texture.permute(1, 2, 0).byte().numpy()
    true = [(50 + 1.5 * t, 40 + 0.8 * t) for t in range(30)]
    frames = []
    for x, y in true:
        f = np.full((200, 240, 3), 90, np.uint8)
        f[int(y):int(y) + 60, int(x):int(x) + 60] = texture
        frames.append(f)
    boxes = [b for _, b in face.track(frames, (50, 40, 60, 60))]
    err = [max(abs(b[0] - int(x)), abs(b[1] - int(y))) for b, (x, y) in zip(boxes, true)]
    assert max(err[10:]) < 3        # after the smoothing settles, within a few pixels of the truth


def test_box_file(tmp_path):
    p = tmp_path / "boxes.txt"
    p.write_text("# x y w h\n10 20 30 40\n11,21,30,40\n")
    assert face.load_boxes(str(p)) == [(10, 20, 30, 40), (11, 21, 30, 40)]
    p.write_text("10 20 30\n")
    with pytest.raises(UserError, match="line 1"):
        face.load_boxes(str(p))


def test_paste_enlarges_only_its_window_as_the_whole_crop_would_be():
    """face._resize_window gives the pixels of a whole-crop interpolate (bicubic when the box is smaller
    or larger than the crop, bilinear for the masks), for any window: paste() enlarges only where it pastes."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(64, 64, 6, generator=g) * 255
    for s, mode in ((52, "bicubic"), (208, "bicubic"), (208, "bilinear")):
        whole = F.interpolate(image.permute(2, 0, 1)[None], size=(s, s), mode=mode, align_corners=False)[0]
        rows, cols = slice(s // 3, s - 2), slice(1, s // 2)
        part = face._resize_window(image.numpy(), s, rows, cols, mode)
        assert torch.allclose(part, whole.permute(1, 2, 0)[rows, cols], atol=1e-2)


def test_paste_leaves_a_softened_jaw_line_beside_the_mouth():
    # an edit that changed nothing, decoded soft (as the autoencoder draws any crop): the strong jaw edges
    # beside the mouth differ from the source's, but they are not an old mouth, so nothing is pasted
    r = 256
    y, x = np.mgrid[0:r, 0:r] / r
    frame = np.full((r, r, 3), 150, np.uint8)
    frame[(y > 0.70 + 3.6 * (x - 0.5) ** 2) & (np.abs(x - 0.5) > 0.12)] = 40       # dark below two jaw curves
    t = torch.from_numpy(frame).float().permute(2, 0, 1)[None]
    soft = F.interpolate(F.interpolate(t, size=(24, 24), mode="area"), size=(64, 64), mode="bilinear")
    soft = soft[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    assert np.abs(soft.astype(int) - face.crop(frame, (0, 0, r, r), 64)).max() > 40     # the edge is softened
    assert np.array_equal(face.paste(frame, soft, (0, 0, r, r), soft), frame)


def test_paste_shows_nothing_of_a_faint_old_mouth_in_the_middle_of_the_lips():
    # a dark-lipped face: its open mouth is a line only 10 grey levels darker than the skin, which the
    # autoencoder blurs away; the edit draws closed lips over it. The change there is under the replace
    # thresholds, yet in the middle of the lips (face.CORE) the output must be the edit's, not source + change
    r = 256
    frame = np.full((r, r, 3), 120, np.uint8)
    frame[169:174, 107:149] = 110                                                # the old mouth's line
    t = torch.from_numpy(frame).float().permute(2, 0, 1)[None]
    blur = lambda x: F.interpolate(F.interpolate(x, size=(16, 16), mode="area"), size=(64, 64), mode="bilinear")
    recon = blur(t)[0].permute(1, 2, 0).round().byte().numpy()
    edited = recon.copy()
    edited[41:46, 24:40] = 150                                                   # closed lips drawn over it
    out = face.paste(frame, edited, (0, 0, r, r), recon)
    up = F.interpolate(torch.from_numpy(edited).float().permute(2, 0, 1)[None], size=(r, r), mode="bicubic")
    up = up[0].permute(1, 2, 0).numpy()
    x0, y0, x1, y1 = face.region(face.CORE, r)
    middle = np.s_[(y0 + y1) // 2 - 4:(y0 + y1) // 2 + 4, (x0 + x1) // 2 - 12:(x0 + x1) // 2 + 12]
    assert np.abs(out[middle].astype(float) - up[middle]).max() < 4           # no trace of the old line
    assert np.array_equal(out[:130], frame[:130])                              # above the mouth: the source

import numpy as np
import pytest
import torch

from flashsync import face
from flashsync.util import UserError


def test_parse_and_check_box():
    assert face.parse_box("176,140,208,208") == (176, 140, 208, 208)
    for bad in ("1,2,3", "a,b,c,d", "1,2,0,5", ""):
        with pytest.raises(UserError):
            face.parse_box(bad)
    face.check_box((10, 10, 50, 50), 100, 100)
    face.check_box((-10, 60, 50, 50), 100, 100)                 # partly outside: padded
    with pytest.raises(UserError, match="lies outside the 100x100 frame"):
        face.check_box((90, 90, 50, 50), 100, 100)


def test_regions_are_inside_the_crop():
    for frac in (face.LOWER_FACE, face.MOUTH):
        x0, y0, x1, y1 = face.region(frac, 64)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    m = face.region_mask(face.LOWER_FACE, 64)
    assert m.sum() == (face.region(face.LOWER_FACE, 64)[2] - face.region(face.LOWER_FACE, 64)[0]) * \
        (64 - face.region(face.LOWER_FACE, 64)[1])


def test_crop_and_paste_touch_only_the_region():
    rng = np.random.default_rng(0)
    frame = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    box = (40, 20, 80, 80)
    crop = face.crop(frame, box, 64)
    assert crop.shape == (64, 64, 3)
    edited = np.zeros_like(crop)
    out = face.paste(frame, edited, box)
    changed = np.any(out != frame, axis=-1)
    x0, y0, x1, y1 = face.region(face.LOWER_FACE, 80)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 20 + y0 and ys.max() < 20 + y1 and xs.min() >= 40 + x0 and xs.max() < 40 + x1
    # the feather: the region's centre is fully replaced, its edge only partly
    assert (out[20 + (y0 + y1) // 2, 80] == 0).all()
    edge = out[20 + y0 + 1, 80].astype(int)
    assert 0 < np.abs(edge - frame[20 + y0 + 1, 80]).sum()
    # a box hanging over the frame edge works too
    assert face.crop(frame, (-20, -20, 60, 60), 32).shape == (32, 32, 3)
    assert face.paste(frame, np.zeros((32, 32, 3), np.uint8), (130, 90, 60, 60)).shape == frame.shape


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

"""Face geometry in one place: boxes, the face tracker, crops, the lower-face and mouth boxes, paste-back.

Boxes in full frames are (x, y, w, h) in pixels. Face crops are square R x R, so a
box is made square around its centre (side = max(w, h)) before cropping.

Inside an aligned crop, regions are fixed fractions (x0, y0, x1, y1) of the crop
(DESIGN.md §2), chosen to match the SynthTalk face layout and typical aligned
real crops:
  LOWER_FACE  from the nose line to the bottom of the crop, across the face: the
              KeySync mask; hides jaw, cheeks and chin so source mouth motion
              cannot leak into an edit.
  MOUTH       a tighter box around the lips (with room for head motion): for
              mouth-weighted losses, the lips encoder and the mouth reader.
"""

import numpy as np
import torch
import torch.nn.functional as F

from flashsync.util import UserError, check_file

LOWER_FACE = (0.12, 0.56, 0.88, 1.0)
MOUTH = (0.30, 0.60, 0.70, 0.80)


# ----------------------------------------------------------------------------- boxes

def parse_box(text):
    """'x,y,w,h' -> (x, y, w, h) ints, or a UserError saying what is wrong."""
    parts = text.replace(" ", "").split(",")
    try:
        box = tuple(int(round(float(p))) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UserError(f"--box expects four numbers x,y,w,h in pixels, got {text!r}")
    if box[2] <= 0 or box[3] <= 0:
        raise UserError(f"--box {text}: width and height must be positive")
    return box


def load_boxes(path):
    """A text file with one box per frame ('x,y,w,h' or 'x y w h'; '#' comments) -> list of boxes."""
    check_file(path, "box file")
    boxes = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#")[0].strip()
            if line:
                try:
                    boxes.append(parse_box(",".join(line.replace(",", " ").split())))
                except UserError as e:
                    raise UserError(f"{path} line {n}: {e}") from None
    if not boxes:
        raise UserError(f"{path}: no boxes in the file")
    return boxes


def square(box):
    """(x, y, w, h) -> the square (x, y, s, s) with the same centre, s = max(w, h)."""
    x, y, w, h = box
    s = max(w, h)
    return (x + (w - s) / 2, y + (h - s) / 2, s, s)


def check_box(box, width, height):
    """Refuse a box that is mostly outside a width x height frame (a little outside is padded)."""
    x, y, w, h = square(box)
    inside = max(0, min(x + w, width) - max(x, 0)) * max(0, min(y + h, height) - max(y, 0))
    if inside < 0.5 * w * h:
        raise UserError(f"box {','.join(str(int(v)) for v in box)} lies outside the {width}x{height} frame "
                        f"(x+w must be <= {width}, y+h <= {height}); pick a box around the face")


def region(frac, size):
    """Fractions (x0, y0, x1, y1) of a size x size crop -> integer pixel bounds (x0, y0, x1, y1)."""
    return tuple(int(round(f * size)) for f in frac)


def region_mask(frac, size, feather=0):
    """(size, size) float mask, 1 inside the region; with feather > 0 (pixels) it ramps to 0 at the region's edge."""
    x0, y0, x1, y1 = (f * size for f in frac)
    c = torch.arange(size, dtype=torch.float32) + 0.5            # pixel centres
    if feather <= 0:
        mx = ((c >= x0) & (c < x1)).float()
        my = ((c >= y0) & (c < y1)).float()
    else:
        mx = torch.clamp(torch.minimum(c - x0, x1 - c) / feather, 0, 1)
        my = torch.clamp(torch.minimum(c - y0, y1 - c) / feather, 0, 1)
        # the crop's own border is not a seam: no fade where the region touches it
        if y1 >= size:
            my = torch.where(c >= y0, torch.clamp((c - y0) / feather, 0, 1), my)
    return my[:, None] * mx[None, :]


# ----------------------------------------------------------------------------- crop and paste

def _grab(frame, x0, y0, x1, y1):
    """frame[y0:y1, x0:x1] with edge replication where the window leaves the frame."""
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    part = frame[cy0:cy1, cx0:cx1]
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1)) + ((0, 0),) * (frame.ndim - 2)
    return np.pad(part, pad, mode="edge") if any(p for pair in pad for p in pair) else part


def _resize(image, h, w):
    """(H, W, C) uint8 or float -> (h, w, C) float tensor, bilinear with antialiasing."""
    t = torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if t.shape[-2:] != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0)


def crop(frame, box, size):
    """Cut the square face crop of `box` from an (H, W, 3) uint8 frame -> (size, size, 3) uint8."""
    x, y, s, _ = square(box)
    x0, y0 = int(round(x)), int(round(y))
    s = int(round(s))
    out = _resize(_grab(frame, x0, y0, x0 + s, y0 + s), size, size)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def paste(frame, face, box, frac=LOWER_FACE, feather=0.08):
    """Blend an edited (R, R, 3) crop back into a copy of the full frame.

    Only `frac` of the crop (default: the lower face, which is what an editor
    changes) is blended, with a linear feather of `feather` x box size, so there
    is no seam; every pixel outside that region is the source pixel, untouched.
    """
    x, y, s, _ = square(box)
    x0, y0, s = int(round(x)), int(round(y)), int(round(s))
    H, W = frame.shape[:2]
    big = _resize(face, s, s)                                        # (s, s, 3)
    mask = region_mask(frac, s, feather=max(1.0, feather * s))[..., None]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + s, W), min(y0 + s, H)
    out = frame.copy()
    if cx1 <= cx0 or cy1 <= cy0:
        return out
    win = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    src = torch.from_numpy(frame[cy0:cy1, cx0:cx1]).float()
    m = mask[win]
    mixed = src * (1 - m) + big[win] * m
    touched = (m[..., 0] > 0).numpy()
    region_out = out[cy0:cy1, cx0:cx1]
    region_out[touched] = mixed.round().clamp(0, 255).to(torch.uint8).numpy()[touched]
    return out


# ----------------------------------------------------------------------------- tracking

def _gray(image):
    """(H, W, 3) uint8 -> (H, W) float32 tensor luminance."""
    t = torch.as_tensor(np.ascontiguousarray(image)).float()
    return t[..., 0] * 0.299 + t[..., 1] * 0.587 + t[..., 2] * 0.114


class Tracker:
    """Follow a user-given face box through a video by normalised cross-correlation.

    The template is the box's content in the first frame, at `size` px. In each new
    frame we search a window of +-`search` x box size around the last raw position
    (downscaled by the same factor), take the NCC peak with sub-pixel refinement,
    and smooth the returned box with an exponential moving average so crops do not
    jitter. The box keeps its size. Causal, so it serves streaming too.
    """

    def __init__(self, frame, box, size=40, search=0.2, smooth=0.5):
        self.box = square(box)
        self.scale = size / self.box[2]
        self.size, self.search, self.smooth = size, search, smooth
        t = self._patch(frame, self.box[0], self.box[1], 0)
        t = t - t.mean()
        self.template = (t / (t.norm() + 1e-6))[None, None]          # (1, 1, size, size)
        self.raw = self.box[:2]                                      # top-left, frame pixels
        self.smoothed = self.box[:2]

    def _patch(self, frame, x, y, margin):
        """Gray patch of side (box + 2*margin) at top-left (x - margin, y - margin), resized by self.scale."""
        s = self.box[2] + 2 * margin
        x0, y0 = int(round(x - margin)), int(round(y - margin))
        n = int(round(s * self.scale))
        g = _gray(_grab(frame, x0, y0, x0 + int(round(s)), y0 + int(round(s))))
        return F.interpolate(g[None, None], size=(n, n), mode="bilinear", antialias=True, align_corners=False)[0, 0]

    def update(self, frame):
        """Track into the next frame -> smoothed (x, y, w, h) floats."""
        margin = self.search * self.box[2]
        region = self._patch(frame, self.raw[0], self.raw[1], margin)[None, None]    # (1, 1, S, S)
        n = self.template.numel()
        ones = torch.ones_like(self.template)
        total = F.conv2d(region, ones)
        energy = F.conv2d(region * region, ones) - total * total / n
        ncc = F.conv2d(region, self.template) / (energy.clamp(min=1e-6).sqrt())        # (1, 1, P, P)
        ncc = ncc[0, 0]
        p = ncc.shape[0]
        iy, ix = divmod(int(ncc.argmax()), p)
        dy = _subpixel(ncc[max(iy - 1, 0):iy + 2, ix], iy, p)
        dx = _subpixel(ncc[iy, max(ix - 1, 0):ix + 2], ix, p)
        # peak at (p - 1) / 2 means no motion; convert patch pixels back to frame pixels
        centre = (p - 1) / 2
        step = (self.box[2] + 2 * margin) / region.shape[-1]
        self.raw = (self.raw[0] + (ix + dx - centre) * step, self.raw[1] + (iy + dy - centre) * step)
        a = self.smooth
        self.smoothed = (a * self.smoothed[0] + (1 - a) * self.raw[0], a * self.smoothed[1] + (1 - a) * self.raw[1])
        return (self.smoothed[0], self.smoothed[1], self.box[2], self.box[3])


def _subpixel(v, i, p):
    """Parabola through the peak and its neighbours -> offset in [-0.5, 0.5]."""
    if len(v) < 3 or i == 0 or i == p - 1:
        return 0.0
    a, b, c = (float(x) for x in v)
    d = a - 2 * b + c
    return 0.0 if d >= 0 else max(-0.5, min(0.5, 0.5 * (a - c) / d))


def track(frames, box, boxes=None):
    """Yield (frame, box) for each frame: `boxes` (one per frame, last one repeated) if given, else tracked from `box`."""
    tracker = None
    for i, frame in enumerate(frames):
        if boxes is not None:
            yield frame, square(boxes[min(i, len(boxes) - 1)])
        elif tracker is None:
            tracker = Tracker(frame, box)
            yield frame, tracker.box
        else:
            yield frame, tracker.update(frame)


class Boxes:
    """The face box of each source frame: fixed, from a per-frame file, or tracked on first sight."""

    def __init__(self, first, per_frame=None, fixed=False):
        self.first, self.per_frame, self.fixed = first, per_frame, fixed
        self.tracker, self.seen = None, []

    def __call__(self, i, frame):
        if self.per_frame is not None:
            return square(self.per_frame[min(i, len(self.per_frame) - 1)])
        if self.fixed:
            return square(self.first)
        if i < len(self.seen):
            return self.seen[i]
        if self.tracker is None:
            self.tracker = Tracker(frame, self.first)
            self.seen.append(self.tracker.box)
        else:
            self.seen.append(self.tracker.update(frame))   # frames arrive in order the first time round
        return self.seen[i]

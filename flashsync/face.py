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
  PASTE       the most a lip-sync edit may change when pasted back: MOUTH with a
              margin for its feathered edge; FlashLips pastes only inside the
              ellipse inscribed in it (see paste()).
"""

import numpy as np
import torch
import torch.nn.functional as F

from flashsync import FPS
from flashsync.nn import box_mean
from flashsync.util import UserError, check_file, warn

LOWER_FACE = (0.12, 0.56, 0.88, 1.0)
MOUTH = (0.30, 0.60, 0.70, 0.80)
PASTE = (0.24, 0.55, 0.76, 0.87)
LIPS = (0.28, 0.56, 0.72, 0.78)      # the ellipse inscribed in it: where a mouth's lips and teeth lie, smiles too
CORE = (0.38, 0.62, 0.62, 0.72)      # the ellipse inscribed in it: the middle of the lips, where the opening is
EYES = (0.29, 0.26, 0.71, 0.52)      # both eyes and their brows: where arousal, sadness and sighs show


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
    """Refuse a box that lies entirely outside a width x height frame. One that crosses an edge is
    fine, as faces near the edge are common: the crop repeats the edge pixels, and paste() writes
    back only the part inside the frame."""
    x, y, w, h = square(box)
    inside = max(0, min(x + w, width) - max(x, 0)) * max(0, min(y + h, height) - max(y, 0))
    if inside <= 0:
        raise UserError(f"box {','.join(str(int(v)) for v in box)} lies outside the {width}x{height} frame "
                        f"(x must be < {width}, y < {height}, x+w > 0, y+h > 0); pick a box around the face")
    if inside < 0.5 * w * h:
        warn(f"box {','.join(str(int(v)) for v in box)} is mostly outside the {width}x{height} frame; "
             f"its crop repeats the frame's edge pixels")


def region(frac, size):
    """Fractions (x0, y0, x1, y1) of a size x size crop -> integer pixel bounds (x0, y0, x1, y1)."""
    return tuple(int(round(f * size)) for f in frac)


def region_mask(frac, size, feather=0, oval=False):
    """(size, size) float mask, 1 inside the region; with feather > 0 (pixels) it ramps to 0 at the region's edge.
    oval: the ellipse inscribed in the region instead (1 inside it, fading to 0 at its edge over `feather`)."""
    x0, y0, x1, y1 = (f * size for f in frac)
    c = torch.arange(size, dtype=torch.float32) + 0.5            # pixel centres
    if oval:
        ax, ay = (x1 - x0) / 2, (y1 - y0) / 2
        d = torch.sqrt(((c[None, :] - x0 - ax) / ax) ** 2 + ((c[:, None] - y0 - ay) / ay) ** 2)   # 1 on the ellipse
        return ((1 - d) * min(ax, ay) / feather).clamp(0, 1) if feather > 0 else (d < 1).float()
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
    """frame[y0:y1, x0:x1] with edge replication where the window leaves the frame (even entirely)."""
    h, w = frame.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return frame[y0:y1, x0:x1]
    ys, xs = np.clip(np.arange(y0, y1), 0, h - 1), np.clip(np.arange(x0, x1), 0, w - 1)
    return frame[np.ix_(ys, xs)]


def _resize(image, h, w, mode="bilinear"):
    """(H, W, C) uint8 or float -> (h, w, C) float tensor; bilinear with antialiasing, or bicubic (to enlarge)."""
    t = torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if t.shape[-2:] != (h, w):              # antialiasing only where it shrinks (it is the same, slower, to enlarge)
        shrink = h < t.shape[-2] or w < t.shape[-1]
        t = F.interpolate(t, size=(h, w), mode=mode, antialias=mode == "bilinear" and shrink, align_corners=False)
    return t[0].permute(1, 2, 0)


def _resize_window(image, s, rows, cols, mode):
    """Rows and columns (slices) of `image` (R, R, C) resized to s x s -> (h, w, C) float tensor: the pixels
    interpolate(mode, align_corners=False) gives there, found without resizing the rest (grid_sample with
    interpolate's pixel centres: out pixel i samples (2i + 1) / s - 1 in normalised coordinates)."""
    t = torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()    # (1, C, R, R)
    y = (2 * torch.arange(rows.start, rows.stop, dtype=torch.float32) + 1) / s - 1
    x = (2 * torch.arange(cols.start, cols.stop, dtype=torch.float32) + 1) / s - 1
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), -1)[None]                # (1, h, w, 2): (x, y)
    return F.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)[0].permute(1, 2, 0)


def crop(frame, box, size):
    """Cut the square face crop of `box` from an (H, W, 3) uint8 frame -> (size, size, 3) uint8."""
    x, y, s, _ = square(box)
    x0, y0 = int(round(x)), int(round(y))
    s = int(round(s))
    out = _resize(_grab(frame, x0, y0, x0 + s, y0 + s), size, size)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def _soft(x, lo, hi):
    """0 below lo, 1 above hi, smooth in between."""
    t = ((x - lo) / (hi - lo)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _grow(m, k):
    """Dilate a (R, R) mask >= 0 by k pixels, then soften its edge over k pixels. Both separable (rows,
    then columns; the mean by cumulative sums): at 256 px, where k = 8, max_pool2d and avg_pool2d over
    17x17 windows took 27 ms a call on 2 CPU cores, this 3."""
    n = 2 * k + 1
    for _ in range(2):
        m = F.pad(m, (k, k)).unfold(-1, n, 1).amax(-1).T                   # (R, R), transposed each pass
    return box_mean(m[None, None], n)[0, 0]


def edit_masks(face, recon, source, region=PASTE, change=(8.0, 20.0), replace=(16.0, 40.0), hold=None, oval=True):
    """Where an edited crop must be pasted -> masks m, g (R, R) in [0, 1], inside `region`.

    m: the edit changed something: mean |face - recon| over a 3x3 neighbourhood above 8-20
       grey levels (recon: the crop through the autoencoder unedited; away from the mouth, less
       recon's own contrast there); add the change there. (3-10 also pasted faint changes
       beside the mouth: on the 256 px demo 38.3 dB outside the mouth after the codec,
       1.9 from its floor; 8-20 and 16-40 below: 39.4 dB, the mouth reading the same, r 0.81.)
    g <= m: the mouth must be replaced: it changed a lot, or lies in the middle of the lips (CORE),
       or, inside MOUTH, the source crop differs strongly (16-40 grey levels) from the edited one
       (an old open mouth where the edit closed it; the autoencoder blurs it, so the change alone
       can miss its corners).
       Take the edited pixels there, so nothing of the old mouth shows through.
    Both grown by R/32, softened, and kept inside `region` (oval: inside the ellipse inscribed in it,
    which leaves out the region's corners, where the jaw line runs beside the mouth and the editor
    redraws it: on the 256 px demo the lower face outside the mouth went from 45.9 to 49.5 dB before
    the codec, with the same mouth reading), feathered by R/16, and out of `hold` ((R, R) bool or None:
    pixels that must stay the source's, such as an occluder in front of the mouth).
    """
    r = face.shape[0]
    f = lambda a: torch.as_tensor(np.asarray(a)).float()
    near = lambda d: F.avg_pool2d(d.abs().mean(-1)[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    changed = near(f(face) - f(recon))                                      # (R, R) grey levels
    # away from the mouth, a change at a strong edge of the crop (a jaw line against hair) is mostly
    # the editor redrawing that edge, not the edit: discount it by the edge's contrast per pixel
    # (on the 256 px demo: lower face outside the mouth 35.5 -> 37.0 dB, LipLeak unchanged)
    rec = f(recon)                                                          # (R, R, 3)
    dx = F.pad(rec[:, 1:] - rec[:, :-1], (0, 0, 0, 1))
    dy = F.pad(rec[1:] - rec[:-1], (0, 0, 0, 0, 0, 1))
    edge = near(dx.abs() + dy.abs())                                        # (R, R) grey levels per pixel
    changed = changed - edge * (1 - region_mask(MOUTH, r, feather=r / 16))
    # the source differs from any decoded crop at its strong edges (the autoencoder softens them): around
    # the LIPS ellipse that is the jaw line beside the chin, not an old mouth, so the same discount applies
    # there (256 px demo: lower face outside the mouth 37.4 -> 40.5 dB, codec floor 40.3); inside it,
    # where a real mouth's lips and teeth are, none does (with it there, sun.mp4's old smile showed through)
    corners = 1 - region_mask(LIPS, r, feather=r / 32, oval=True)
    old = (near(f(face) - f(source)) - edge * corners) * region_mask(MOUTH, r, feather=r / 32)
    k = max(1, r // 32)
    keep = region_mask(region, r, feather=r / 16, oval=oval)
    if hold is not None:
        keep = keep * (1 - torch.as_tensor(np.asarray(hold)).float())
    m = _grow(_soft(torch.maximum(changed, old), *change), k) * keep
    g = torch.minimum(_grow(_soft(torch.maximum(changed, old), *replace), k) * keep, m)
    # in the middle of the lips, whatever the edit touched is the edit's: a dark-lipped mouth that opened or
    # closed changes by less than `replace` there, and the source's old lip line showed through (the 256 px
    # demo: the old open mouth visible in frames the edit closed, r 0.813 -> 0.820, with the source 0.187 -> 0.158)
    g = torch.maximum(g, m * region_mask(CORE, r, feather=r / 32, oval=True))
    return m, g


MASK_RES = 128        # paste() finds where to paste on crops no larger than this


def paste(frame, face, box, recon=None, region=PASTE, hold=None, oval=True):
    """Paste what an edit changed back into a copy of the full (H, W, 3) frame, at the frame's resolution.

    face: the edited (R, R, 3) crop of `box`; recon: the same crop through the same autoencoder,
    unedited (None: the source crop itself). Only the change d = face - recon is pasted, so the
    autoencoder's blur and colour errors cancel and the source keeps its own detail:

        out = src + m * up(d) + g * (up(recon) - src)        (where g = m = 1: out = up(face))

    with the soft masks of edit_masks() enlarged to the box (bicubic). Outside `region` of the box,
    and wherever the edit changed nothing, every pixel is the source pixel. A box that crosses
    the frame's edge is pasted where it lies inside the frame. hold: (R, R) bool crop pixels to keep;
    oval: paste only inside the ellipse inscribed in `region` (the mouth's shape; see edit_masks).
    """
    x, y, s, _ = square(box)
    x0, y0, s = int(round(x)), int(round(y)), int(round(s))
    H, W = frame.shape[:2]
    out = frame.copy()
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + s, W), min(y0 + s, H)
    if cx1 <= cx0 or cy1 <= cy0:
        return out
    recon = crop(frame, box, len(face)) if recon is None else recon
    # the masks are smooth (grown by R/32, feathered by R/16): found on crops of at most MASK_RES px,
    # they are enlarged to the box like the rest (at 256 px, 4x cheaper: a live stream has 40 ms a frame)
    r = min(len(face), MASK_RES)
    small = lambda im: im if len(im) <= r else _resize(im, r, r).numpy()
    hold = None if hold is None else small(np.asarray(hold, np.float32)[..., None])[..., 0] > 0.5
    pair = small(np.concatenate([face, recon], -1))                     # (r, r, 6): one resize for both
    m, g = edit_masks(pair[..., :3], pair[..., 3:], crop(frame, box, r), region, hold=hold, oval=oval)
    rows, cols = np.nonzero((m > 0).numpy())                 # only the part of the box the masks touch
    if len(rows) == 0:
        return out
    fy0, fy1 = max(cy0, y0 + rows.min() * s // r), min(cy1, y0 + -(-(rows.max() + 1) * s // r))
    fx0, fx1 = max(cx0, x0 + cols.min() * s // r), min(cx1, x0 + -(-(cols.max() + 1) * s // r))
    if fy1 <= fy0 or fx1 <= fx0:
        return out
    # only that window is enlarged to the box (at 256 px it is about a fifth of the box)
    win = slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)
    m, g = _resize_window(torch.stack([m, g], -1), s, *win, "bilinear").split(1, -1)    # (h, w, 1) each
    src = torch.from_numpy(frame[fy0:fy1, fx0:fx1]).float()
    both = _resize_window(np.concatenate([face, recon], -1), s, *win, "bicubic")        # (h, w, 6)
    rec = both[..., 3:]
    d = both[..., :3] - rec
    mixed = src + m * d + g * (rec - src)
    out[fy0:fy1, fx0:fx1] = mixed.round().clamp(0, 255).to(torch.uint8).numpy()
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
        self.score = float(ncc[iy, ix])                   # how well the face still matches its first look
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


class LostFace(UserError):
    """The tracker's match averaged poor over half a second: the face left the box (turned, left the frame, a cut)."""

    def __init__(self, frame):
        super().__init__(f"the face box was lost by the tracker at frame {frame} ({frame / FPS:.1f} s)")
        self.frame = frame


def track(frames, box, boxes=None, lost=0.0):
    """Yield (frame, box) for each frame: `boxes` (one per frame, last one repeated) if given, else tracked from `box`.
    lost > 0: raise LostFace once the tracker's normalised correlation averages below it over half a second
    (an average: a tracker wandering over noise or a frame edge scores an odd high value now and then)."""
    tracker, scores = None, []
    for i, frame in enumerate(frames):
        if boxes is not None:
            yield frame, square(boxes[min(i, len(boxes) - 1)])
        elif tracker is None:
            tracker = Tracker(frame, box)
            yield frame, tracker.box
        else:
            b = tracker.update(frame)
            scores = (scores + [tracker.score])[-(FPS // 2 + 1):]
            if lost > 0 and len(scores) > FPS // 2 and sum(scores) / len(scores) < lost:
                raise LostFace(i - FPS // 2)                  # the window's first frame: keep nothing doubtful
            yield frame, b


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

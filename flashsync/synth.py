"""SynthTalk: the built-in talking-face world (DESIGN.md §3).

make_clip(identity, seed) returns a paired video + audio clip with per-frame
ground truth for everything the papers claim: mouth shape, phoneme and
laugh/sigh label, valence/arousal, head pose, blinks, lower-face and mouth
boxes, and an optional occluder with its mask. Deterministic by (identity, seed).

Faces are drawn analytically in torch, batched over frames: every shape is a
signed-distance-like field turned into anti-aliased coverage, composited back
to front in face coordinates (u, v) that follow the head (translation,
rotation, scale). The mouth interior, teeth and lips use exact vertical
coverage, so the number of dark pixels in a column is the opening height: that
makes the analytic reader (read_mouth) accurate on any SynthTalk-like frame,
generated ones included.
"""
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from flashsync import FPS, SAMPLES_PER_FRAME
from flashsync import face, speech

INTERIOR = (0.12, 0.03, 0.04)     # mouth interior: darker than any skin, lip or hair in the mouth box
TEETH = (0.90, 0.90, 0.86)        # near grey: skin and lips are never this unsaturated
OPEN_THRESHOLD = 0.15             # reader opening above this = "open" (LipLeak)
_SPLITS = ("train",) * 8 + ("val", "test")


def split_of(identity):
    """Fixed split by identity: 80 % train, 10 % val, 10 % test, stable whatever the dataset size."""
    return _SPLITS[identity % 10]


# ----------------------------------------------------------------------------- identities

@dataclasses.dataclass
class Identity:
    index: int
    skin: tuple
    lips: tuple
    hair: tuple
    iris: tuple
    cloth: tuple
    bg: tuple                  # two gradient colours, 6 numbers
    bg_angle: float
    face_w: float              # half-width, crop units ([-1, 1] across the crop)
    face_h: float              # half-height
    chin: float                # 0 round .. 1 pointed
    eye_dx: float
    eye_y: float
    eye_size: float
    mouth_w: float
    lip_thick: float
    hair_style: int            # 0 bald, 1 short, 2 bangs, 3 side part, 4 long
    light: tuple               # (angle, strength)
    skin_noise: float
    pitch: float               # Hz
    formant_scale: float       # vocal tract length

    @staticmethod
    def sample(index):
        r = np.random.default_rng([index, 7919])
        u = r.uniform
        tone = u(0, 1)                                                      # light .. dark skin
        skin = np.array([0.96, 0.80, 0.69]) * (1 - tone) + np.array([0.50, 0.32, 0.22]) * tone
        skin = np.clip(skin * u(0.95, 1.05, 3), 0, 1)
        lips = np.clip(skin * np.array([0.85, 0.55, 0.58]) + np.array([0.12, 0.02, 0.03]) * u(0.5, 1.5), 0.2, 1)
        hair = [np.array([0.07, 0.05, 0.04]), np.array([0.35, 0.2, 0.1]), np.array([0.75, 0.58, 0.3]),
                np.array([0.55, 0.2, 0.08]), np.array([0.6, 0.6, 0.6])][r.integers(5)] * u(0.8, 1.2)
        female = r.random() < 0.5
        return Identity(
            index, tuple(skin), tuple(lips), tuple(np.clip(hair, 0, 1)), tuple(u(0.1, 0.6, 3) * [0.6, 0.8, 1.0]),
            tuple(u(0.1, 0.9, 3)), tuple(u(0.15, 0.95, 6)), u(0, 2 * math.pi),
            u(0.5, 0.6), u(0.68, 0.76), u(0.0, 1.0), u(0.2, 0.26), u(-0.16, -0.1), u(0.85, 1.15),
            u(0.85, 1.15), u(0.8, 1.25), int(r.choice([0, 1, 1, 2, 3, 4, 4] if female else [0, 1, 1, 1, 2, 3])),
            (u(0, 2 * math.pi), u(0.05, 0.25)), u(0.0, 0.06),
            u(170, 250) if female else u(90, 150), u(1.05, 1.18) if female else u(0.92, 1.04))


# ----------------------------------------------------------------------------- slow tracks

def _smooth_noise(rng, n, rate, k=3):
    """Sum of k random sinusoids, frequencies around `rate` Hz, sampled at 25 fps -> (n,) in about [-1, 1]."""
    t = np.arange(n) / FPS
    out = sum(np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * rate * t + rng.uniform(0, 2 * np.pi)) for _ in range(k))
    return out / math.sqrt(k)


def emotion_track(rng, n, valence=None, arousal=None):
    """Slowly changing (valence, arousal) per frame -> (n, 2); fixed values or arrays override."""
    t = np.arange(n) / FPS
    anchors_t = np.arange(0, t[-1] + 4, rng.uniform(2, 4))
    out = []
    for given in (valence, arousal):
        if given is not None:
            out.append(np.broadcast_to(np.asarray(given, dtype=np.float64), (n,)))
            continue
        a = np.clip(rng.uniform(-1, 1) + np.cumsum(rng.normal(0, 0.35, len(anchors_t))), -1, 1)
        i = np.clip(np.searchsorted(anchors_t, t, side="right") - 1, 0, len(anchors_t) - 2)
        w = (t - anchors_t[i]) / (anchors_t[i + 1] - anchors_t[i])
        w = 0.5 - 0.5 * np.cos(np.pi * w)                          # smooth between anchors
        out.append(a[i] * (1 - w) + a[i + 1] * w)
    return np.stack(out, 1).astype(np.float32)


def head_track(rng, n, arousal, labels, laugh_rate=5.0):
    """Head (tx, ty, rotation rad, scale) per frame -> (n, 4); more motion with arousal, bobbing in laughs."""
    amp = 0.7 + 0.3 * arousal
    tx = 0.035 * amp * _smooth_noise(rng, n, 0.25)
    ty = 0.025 * amp * _smooth_noise(rng, n, 0.3)
    rot = 0.06 * amp * _smooth_noise(rng, n, 0.2)
    scale = 1 + 0.025 * _smooth_noise(rng, n, 0.15)
    t = np.arange(n) / FPS
    laugh = labels == speech.LAUGH
    ty = ty + laugh * 0.02 * np.sin(2 * np.pi * laugh_rate * t)
    sigh = labels == speech.SIGH
    ty, rot = ty + sigh * 0.015, rot + sigh * 0.02
    return np.stack([tx, ty, rot, scale], 1).astype(np.float32)


def lid_track(rng, n, labels):
    """Eyelid closure 0 (open) .. 1 (closed) per frame: blinks every few seconds, lowered lids in sighs."""
    lid = np.zeros(n)
    t = rng.uniform(0.5, 3)
    while t * FPS < n:
        c = int(t * FPS)
        for k, v in enumerate((0.5, 1.0, 0.6, 0.2)):              # ~160 ms blink
            if c + k < n:
                lid[c + k] = max(lid[c + k], v)
        t += rng.uniform(2, 6)
    return np.maximum(lid, 0.45 * (labels == speech.SIGH)).astype(np.float32)


# ----------------------------------------------------------------------------- drawing helpers

def _ellipse(u, v, a, b):
    """Approximate signed distance to an axis-aligned ellipse (negative inside)."""
    qa, qb = u / a, v / b
    q = torch.sqrt(qa * qa + qb * qb).clamp(min=1e-6)
    grad = torch.sqrt((qa / a) ** 2 + (qb / b) ** 2).clamp(min=1e-6) / q
    return (q - 1) / grad


def _cover(d, px):
    """Anti-aliased coverage of the region d < 0, px = pixel size in the same units."""
    return (0.5 - d / px).clamp(0, 1)


def _span(v, px, lo, hi):
    """Exact vertical coverage of each pixel (centre v, height px) by the interval [lo, hi]."""
    return ((torch.minimum(v + px / 2, hi) - torch.maximum(v - px / 2, lo)) / px).clamp(0, 1)


class _Canvas:
    """Premultiplied back-to-front compositing over (T, R, R, 3)."""

    def __init__(self, shape):
        self.rgb = torch.zeros(*shape, 3)
        self.alpha = torch.zeros(shape)

    def over(self, alpha, colour):
        alpha = alpha.expand_as(self.alpha)
        # most shapes (eyes, nostrils, lips) cover a few rows: composite only the band they touch
        rows = torch.nonzero(alpha.amax((0, 2)) > 0)
        if len(rows) == 0:
            return
        band = slice(int(rows[0]), int(rows[-1]) + 1)
        alpha, rgb, acc = alpha[:, band], self.rgb[:, band], self.alpha[:, band]
        colour = torch.as_tensor(colour, dtype=torch.float32).expand_as(self.rgb)[:, band]
        a = alpha[..., None]
        rgb.mul_(1 - a).add_(a * colour)
        acc.mul_(1 - alpha).add_(alpha)


def _texture(rng, res, cells, amp):
    """Smooth random field (res, res) in [-amp, amp]: a small random grid, bicubic upsampled."""
    grid = torch.from_numpy(rng.uniform(-1, 1, (1, 1, cells, cells))).float()
    return amp * F.interpolate(grid, size=(res, res), mode="bicubic", align_corners=False)[0, 0].clamp(-1, 1)


def background(ident, res):
    """(res, res, 3) float background: a two-colour gradient with low-frequency texture."""
    rng = np.random.default_rng([ident.index, 31])
    g = (torch.arange(res) + 0.5) / res * 2 - 1
    y, x = g[:, None], g[None, :]
    w = ((math.cos(ident.bg_angle) * x + math.sin(ident.bg_angle) * y) * 0.5 + 0.5).clamp(0, 1)[..., None]
    c0, c1 = torch.tensor(ident.bg[:3]), torch.tensor(ident.bg[3:])
    return ((c0 * (1 - w) + c1 * w) * (1 + _texture(rng, res, 6, 0.12)[..., None])).clamp(0, 1)


# ----------------------------------------------------------------------------- rendering

def render(ident, gt, res, occluder=None):
    """Draw frames from per-frame ground truth -> (T, res, res, 3) uint8 tensor, occluder mask (T, res, res) bool."""
    P = lambda k: torch.as_tensor(np.asarray(gt[k]), dtype=torch.float32)[:, None, None]   # (T, 1, 1)
    T = len(gt["open"])
    g = (torch.arange(res) + 0.5) / res * 2 - 1
    y, x = g[None, :, None], g[None, None, :]
    sc, rot = P("scale"), P("rot")
    dx, dy = x - P("tx"), y - P("ty")
    cos, sin = torch.cos(rot), torch.sin(rot)
    u = (cos * dx + sin * dy) / sc                     # face coordinates, (T, R, R)
    v = (-sin * dx + cos * dy) / sc
    px = 2.0 / (res * sc)                              # one pixel in face units
    skin, lips, hair = (torch.tensor(c) for c in (ident.skin, ident.lips, ident.hair))
    fw, fh = ident.face_w, ident.face_h
    val, aro, lid = P("valence"), P("arousal"), P("lid")
    c = _Canvas((T, res, res))
    cover = lambda d: _cover(d, px)

    # body and head outline, back to front
    c.over(_cover(_ellipse(x - P("tx") * 0.5, y - 1.35, 0.85, 0.55), 2.0 / res), ident.cloth)
    head_top = _ellipse(u, v + 0.06, fw * 1.08, fh * 1.02)
    if ident.hair_style == 4:
        c.over(cover(_ellipse(u, v - 0.15, fw * 1.3, fh * 1.2)), hair * 0.85)
    elif ident.hair_style > 0:
        c.over(cover(head_top), hair * 0.85)
    c.over(cover(_ellipse(u, v - 0.95, 0.21, 0.9)), skin * 0.78)                   # neck
    for side in (-1, 1):
        c.over(cover(_ellipse(u - side * fw * 0.98, v + 0.02, 0.06, 0.1)), skin * 0.92)  # ears
    a_face = fw * (1 - ident.chin * 0.3 * (v / fh).clamp(0, 1) ** 2)                  # narrower toward the chin
    d_face = _ellipse(u, v, a_face, fh)
    q = (torch.sqrt((u / a_face) ** 2 + (v / fh) ** 2)).clamp(max=1)
    grain = 1 + ident.skin_noise * _texture(np.random.default_rng([ident.index, 5]), 16, 8, 1.0)
    tex = F.grid_sample(grain[None, None].expand(T, 1, 16, 16), torch.stack([u / fw, v / fh], -1),
                        align_corners=False, padding_mode="border")[:, 0]
    c.over(cover(d_face), skin * ((1 - 0.15 * q ** 4) * tex)[..., None])

    # cheeks lift and flush with valence
    pos_val = val.clamp(min=0)
    for side in (-1, 1):
        blush = cover(_ellipse(u - side * 0.3, v - 0.19 + 0.03 * pos_val, 0.1, 0.06)) * (0.12 + 0.25 * pos_val)
        c.over(blush, torch.tensor([0.9, 0.4, 0.4]))
    # nose: bridge shadow, tip, nostrils
    c.over(cover(_ellipse(u - 0.02, v - 0.0, 0.025, 0.11)) * 0.35, skin * 0.8)
    c.over(cover(_ellipse(u, v - 0.11, 0.06, 0.033)) * 0.5, skin * 0.82)
    for side in (-1, 1):
        c.over(cover(_ellipse(u - side * 0.03, v - 0.125, 0.018, 0.009)) * 0.7, skin * 0.62)

    # mouth: lips, interior, teeth as exact vertical spans in the mouth's own bent frame
    o, wd, rd, th, smile = P("open"), P("width"), P("round"), P("teeth"), P("smile")
    hw = ident.mouth_w * (0.10 + 0.08 * wd) * (1 - 0.2 * rd)                        # interior half-width
    hwo = hw * 1.08 + 0.012                                                          # lips half-width
    vm = v - 0.36 + 0.05 * smile * (u / hwo).clamp(-1, 1) ** 2                        # corners up when smiling
    top, bot = (0.045 + 0.01 * rd) * o, (0.075 + 0.01 * rd) * o                       # jaw drops more than lip lifts
    shape_o = torch.sqrt((1 - (u / hwo) ** 2).clamp(min=0))
    shape_i = torch.sqrt((1 - (u / hw) ** 2).clamp(min=0))
    ut, lt = 0.028 * ident.lip_thick * (1 + 0.4 * rd), 0.034 * ident.lip_thick * (1 + 0.4 * rd)
    c.over(_span(vm, px, -(top + ut) * shape_o, (bot + lt) * shape_o), lips)
    c.over(_span(vm, px, -0.004 * shape_o, 0.004 * shape_o) * 0.8, lips * 0.7)       # the line between the lips
    inner_top, inner_bot = -top * shape_i, bot * shape_i
    c.over(_span(vm, px, inner_top, inner_bot), INTERIOR)
    teeth_h = 0.45 * th * (top + bot) * shape_i                                        # always leaves dark below
    c.over(_span(vm, px, inner_top, torch.minimum(inner_bot, inner_top + teeth_h)), TEETH)

    # eyes: white (narrowed by the lid, widened by arousal), iris, pupil, lid line; then brows
    for side in (-1, 1):
        eu, ev = u - side * ident.eye_dx, v - ident.eye_y
        ea = 0.09 * ident.eye_size
        eb = (0.045 * ident.eye_size * (1 + 0.25 * aro) * (1 - lid)).clamp(min=1e-3)
        white = cover(_ellipse(eu, ev, ea, eb))
        c.over(white, (0.95, 0.95, 0.93))
        c.over(cover(_ellipse(eu, ev, 0.04 * ident.eye_size, 0.04 * ident.eye_size)) * white, ident.iris)
        c.over(cover(_ellipse(eu, ev, 0.017, 0.017)) * white, (0.04, 0.03, 0.03))
        c.over(cover(_ellipse(eu, ev, ea, eb).abs() - 0.008) * ((ev < 0.004) & (eu.abs() < ea)).float(), skin * 0.35)
        bv = v - ident.eye_y + 0.105 + 0.035 * aro                                    # brows rise with arousal
        tilt = -0.3 * side * val.clamp(max=0)                                         # inner ends up when sad
        bu = u - side * ident.eye_dx
        c.over(cover(_ellipse(bu, bv - tilt * bu, 0.1, 0.018)), hair * 0.7)

    # hair in front: everything above a style-dependent hairline inside the head outline
    if ident.hair_style > 0:
        line = {1: -0.5 + 0.15 * (u / fw) ** 2, 2: -0.3 + 0.02 * torch.sin(u * 40),
                3: -0.45 + 0.15 * (u / fw), 4: -0.48 + 0.2 * (u / fw) ** 2}[ident.hair_style]
        c.over(cover(torch.maximum(head_top, v - line)), hair)

    lx, ly = math.cos(ident.light[0]), math.sin(ident.light[0])
    light = (1 + ident.light[1] * (lx * x + ly * y))[..., None]
    img = background(ident, res) * (1 - c.alpha[..., None]) + c.rgb * light

    mask = torch.zeros(T, res, res, dtype=torch.bool)
    if occluder is not None:
        a, colour = _occluder(occluder, x, y, res, ident)
        img = img * (1 - a[..., None]) + a[..., None] * colour
        mask = a > 0.5
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8), mask


def _occluder(occ, x, y, res, ident):
    """A hand or a microphone crossing the lower face: alpha (T, R, R) and colour (T, R, R, 3)."""
    ox = torch.as_tensor(occ["x"], dtype=torch.float32)[:, None, None]
    oy = float(occ["y"])
    px = 2.0 / res
    c = _Canvas((len(ox), res, res))
    if occ["kind"] == "hand":
        hu, hv = x - ox, y - oy
        c.over(_cover(_ellipse(hu, hv - 0.1, 0.2, 0.24), px), torch.tensor(ident.skin) * 0.9)
        for k, off in enumerate((-0.14, -0.05, 0.04, 0.13)):
            c.over(_cover(_ellipse(hu - off, hv + 0.22 + 0.04 * (k in (1, 2)), 0.045, 0.16), px), torch.tensor(ident.skin) * 0.88)
        c.over(_cover(_ellipse(hu + 0.22, hv - 0.05, 0.05, 0.13), px), torch.tensor(ident.skin) * 0.85)   # thumb
    else:
        mu, mv = x - ox, y - oy
        c.over(_cover(_ellipse(mu, mv - 0.45, 0.05, 0.45), px), (0.25, 0.25, 0.27))                   # handle
        head = _cover(_ellipse(mu, mv, 0.13, 0.13), px)
        mesh = 0.85 + 0.15 * torch.sin(mu * 120).sign()
        c.over(head, torch.stack([0.55 * mesh, 0.55 * mesh, 0.58 * mesh], -1))
    colour = c.rgb / c.alpha.clamp(min=1e-6)[..., None]
    return c.alpha, colour


# ----------------------------------------------------------------------------- clips

def make_clip(identity, seed, seconds=6.0, res=64, occluder=False, nsv=0.3, offset=0,
              valence=None, arousal=None, motion=True, mouth=None):
    """One SynthTalk clip. Returns a dict:

    video (T, res, res, 3) uint8; audio (T*640,) float32 at 16 kHz; occluder (T, res, res)
    bool; gt: per-frame arrays (phoneme, label, open, width, round, teeth, smile,
    valence, arousal, tx, ty, rot, scale, lid, lower_face_box (T, 4), mouth_box (T, 4));
    meta: identity, seed, split, offset (audio delayed by `offset` frames), occluder kind, nsv.
    mouth: optional dict of open, width, round, teeth tracks (T,) that replace the speech's: the
    same person, head motion and occluder saying something else (the evaluation's oracle).
    """
    ident = Identity.sample(identity)
    rng = np.random.default_rng([identity, seed, 104729])
    n = max(1, int(round(seconds * FPS)))
    emo = emotion_track(rng, n, valence, arousal)
    aro_at = lambda t: float(emo[min(int(t * FPS), n - 1), 1])
    segs = speech.timeline(rng, n / FPS + 0.5, aro_at, nsv=nsv)
    phoneme, label = speech.frame_labels(segs, n)
    shape = speech.mouth_track(segs, n)                 # (T, 4) open, width, round, teeth
    head = head_track(rng, n, emo[:, 1], label)
    if not motion:
        head[:] = (0, 0, 0, 1)
    laugh = (label == speech.LAUGH).astype(np.float32)
    gt = dict(phoneme=phoneme, label=label, open=shape[:, 0], width=shape[:, 1], round=shape[:, 2],
              teeth=shape[:, 3], smile=np.clip(0.8 * emo[:, 0] + 0.8 * laugh, -1, 1).astype(np.float32),
              valence=emo[:, 0], arousal=emo[:, 1], tx=head[:, 0], ty=head[:, 1], rot=head[:, 2],
              scale=head[:, 3], lid=lid_track(rng, n, label))
    if mouth is not None:
        gt.update({k: np.asarray(mouth[k], dtype=np.float32)[:n] for k in ("open", "width", "round", "teeth")})
    audio = speech.synthesize(rng, segs, n * SAMPLES_PER_FRAME, ident.pitch, ident.formant_scale, aro_at)
    if offset:
        shift = offset * SAMPLES_PER_FRAME                      # > 0: audio lags the video
        audio = torch.roll(audio, shift)
        if shift > 0:
            audio[:shift] = 0
        else:
            audio[shift:] = 0
    occ = None
    if occluder:
        start, dur = rng.uniform(0, max(0.1, n / FPS - 2)), rng.uniform(1.5, 3.0)
        t = np.arange(n) / FPS
        direction = rng.choice([-1, 1])
        xs = direction * (-1.6 + 3.2 * np.clip((t - start) / dur, 0, 1))
        xs[(t < start) | (t > start + dur)] = 9.0               # off screen
        occ = dict(kind=str(rng.choice(["hand", "mic"])), x=xs.astype(np.float32), y=float(rng.uniform(0.35, 0.6)))
    # 64 frames at a time: the canvases stay in the CPU cache (1.7x faster than 256 at a time)
    chunks = [render(ident, {k: v[i:i + 64] for k, v in gt.items()}, res,
                     None if occ is None else dict(occ, x=occ["x"][i:i + 64])) for i in range(0, n, 64)]
    video = torch.cat([ch[0] for ch in chunks]).numpy()
    mask = torch.cat([ch[1] for ch in chunks]).numpy()
    gt["lower_face_box"], gt["mouth_box"] = _boxes(ident, gt, res)
    meta = dict(identity=identity, seed=seed, split=split_of(identity), offset=offset,
                occluder=None if occ is None else occ["kind"], resolution=res, nsv=nsv)
    return dict(video=video, audio=audio.numpy(), occluder=mask, gt=gt, meta=meta)


def _boxes(ident, gt, res):
    """Exact per-frame lower-face and mouth boxes (x, y, w, h) in crop pixels, from the head pose."""
    def to_crop(uv):                                     # (K, 2) face points -> (T, K, 2) crop pixels
        rot, sc = gt["rot"][:, None], gt["scale"][:, None]
        xs = (np.cos(rot) * uv[:, 0] - np.sin(rot) * uv[:, 1]) * sc + gt["tx"][:, None]
        ys = (np.sin(rot) * uv[:, 0] + np.cos(rot) * uv[:, 1]) * sc + gt["ty"][:, None]
        return np.stack([(xs + 1) / 2 * res, (ys + 1) / 2 * res], -1)

    def bbox(p):
        lo, hi = p.min(1), p.max(1)
        lo, hi = np.clip(lo, 0, res), np.clip(hi, 0, res)
        return np.concatenate([lo, hi - lo], 1).astype(np.float32)

    fw = ident.face_w
    nose = to_crop(np.array([[-fw, 0.14], [fw, 0.14], [-fw, 0.9], [fw, 0.9]]))
    lower = bbox(nose)
    lower[:, 3] = res - lower[:, 1]                      # down to the bottom of the crop
    hw = ident.mouth_w * 0.18 * 1.08 + 0.012 + 0.01
    mouth = bbox(to_crop(np.array([[-hw, 0.36 - 0.12], [hw, 0.36 - 0.12], [-hw, 0.36 + 0.15], [hw, 0.36 + 0.15]])))
    return lower, mouth


# ----------------------------------------------------------------------------- the analytic reader

def read_mouth(frames):
    """Measure the mouth from pixels of SynthTalk-like crops (..., R, R, 3) uint8 -> dict of (...,) arrays.

    open:  height of the mouth interior (dark interior + teeth) at its tallest
           column inside face.MOUTH, as a fraction of the crop, divided by the
           height of a fully open mouth, so 0 closed .. about 1 wide open.
    width: widest row of the interior, as a fraction of the crop (0 when closed).

    Crops larger than READ_RES are averaged down to it first: at 256 px the 1-2 px line between
    closed lips read as interior (up to 0.15-0.6; r with the truth 0.77 on identity 25, now 0.95).
    """
    f = torch.as_tensor(np.asarray(frames)).float() / 255
    if f.shape[-2] > READ_RES:
        lead = f.shape[:-3]
        f = F.interpolate(f.reshape(-1, *f.shape[-3:]).movedim(-1, 1), size=(READ_RES, READ_RES), mode="area")
        f = f.movedim(1, -1).reshape(*lead, READ_RES, READ_RES, 3)
    res = f.shape[-2]
    x0, y0, x1, y1 = face.region(face.MOUTH, res)
    f = f[..., y0:y1, x0:x1, :]                                  # (..., h, w, 3)
    lum = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    # Pixels on the interior's edge mix interior and lip colour; unmixing them linearly
    # (rather than thresholding) gives sub-pixel heights. The lips' luminance is read
    # from the reddest pixels of the box (lips are the most saturated red there).
    red = (f[..., 0] - (f[..., 1] + f[..., 2]) / 2).flatten(-2)  # (..., h*w)
    k = max(1, red.shape[-1] // 25)
    top = red.topk(k, dim=-1).indices
    lip = lum.flatten(-2).gather(-1, top).mean(-1)[..., None, None]
    inner = sum(w * c for w, c in zip((0.299, 0.587, 0.114), INTERIOR))
    # a dead zone (85 % of the lips' or, if darker, the skin's luminance: the box's median) keeps
    # shaded or dark skin from counting as interior
    skin = lum.flatten(-2).median(-1).values[..., None, None]
    edge = 0.85 * torch.minimum(lip, skin)
    dark = ((edge - lum) / (edge - inner).clamp(min=0.05)).clamp(0, 1)
    # Teeth are bright but, like the interior, colourless: next to the dark interior
    # (the two rows above and one below it) any pixel is a mix of lips and
    # interior/teeth, unmixed linearly on chroma (red - blue), high only for lips.
    chroma = f[..., 0] - f[..., 2]
    lip_c = chroma.flatten(-2).gather(-1, top).mean(-1)[..., None, None]
    lip_c = torch.minimum(lip_c, chroma.flatten(-2).median(-1).values[..., None, None])
    low_c = INTERIOR[0] - INTERIOR[2]
    pale = ((lip_c - chroma) / (lip_c - low_c).clamp(min=0.05)).clamp(0, 1)
    core = (dark > 0.2).float()
    near = torch.maximum(torch.maximum(F.pad(core[..., 1:, :], (0, 0, 0, 1)), F.pad(core[..., 2:, :], (0, 0, 0, 2))),
                         F.pad(core[..., :-1, :], (0, 0, 1, 0)))
    inside = torch.maximum(dark, pale * near)                   # (..., h, w) interior fraction per pixel
    w = inside.shape[-1]
    cols = inside[..., w // 5: w - w // 5].sum(-2)              # (..., w') interior height of the central columns
    cols = F.avg_pool1d(cols.reshape(-1, 1, cols.shape[-1]), 3, 1, 1).reshape(cols.shape)
    rows = inside.sum(-1)
    return dict(open=(cols.max(-1).values / res / OPEN_SCALE).numpy(),
                width=(rows.max(-1).values / res).numpy())


READ_RES = 64           # the crop size the reader measures at (larger crops are averaged down to it)
OPEN_SCALE = 0.12 / 2   # interior height of a fully open mouth (0.12 face units), as a fraction of the crop

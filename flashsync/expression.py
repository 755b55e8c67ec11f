"""Reading emotion, laughs and sighs from the pixels of SynthTalk-like crops: KeyFace's metrics.

synth.read_mouth measures the mouth; read_face measures what else synth.render draws of
valence, arousal, laughs and sighs, per frame, at READ_RES (larger crops are averaged down):

    smile   lip-line bend: how far the mouth's centre sits below its corners (fraction of the crop;
            the corners rise with valence and in laughs)
    blush   the cheeks' redness over the nose's (they flush with valence > 0)
    tilt    how much higher the brows' inner ends sit than their outer ends (sadness lifts them)
    brow    brow-to-eye distance (fraction of the crop; the brows rise with arousal)
    eyes    eye-white area (fraction of the crop; wider with arousal, lids lowered in blinks and sighs)
    eye_y   the eye whites' centre row (fraction of the crop; lower in sighs: the head drops, the lids fall)

What a face shows of an emotion depends on the face (lip colour, eye size, where the brows sit),
so emotion is read *relative to the same face*: the slopes below were fitted on SynthTalk's
training identities with each identity's mean removed (calibrate()), and emotion_r correlates
read and asked-for values within each face. Laughs and sighs are read against the clip's own
resting face: a laugh is a smile well above it with the mouth open, a sigh lids well below it
for longer than a blink.

They are SynthTalk's metrics, not detectors for real faces: on sun.mp4's face (64 px) they find
no eye whites and read 122 of 200 frames as sighs.
"""
import numpy as np
import torch
import torch.nn.functional as F

from flashsync import face, metrics, synth
from flashsync.speech import LAUGH, SIGH

READ_RES = 64
MOUTH = (0.34, 0.58, 0.66, 0.80)   # the widest mouth and its smile, with head motion: narrower than face.LIPS,
                                   # which holds the jaw line of narrow faces
FEATURES = ("smile", "blush", "tilt", "brow", "eyes")


def _ratio(c):
    """Redness r / (g + b): lips and flushed cheeks are redder than skin, and shading does not change it."""
    return c[..., 0] / (c[..., 1] + c[..., 2]).clamp(min=0.02)


def _fit(y, x, w):
    """Per row, weighted least squares y ~ c0 + c1 x + c2 x^2 over the columns: y, x, w (T, n) -> c (T, 3)."""
    a = torch.stack([torch.ones_like(x), x, x * x], -1)                      # (T, n, 3)
    aw = a * w[..., None]
    lhs = aw.transpose(1, 2) @ a + 1e-4 * torch.eye(3)
    return torch.linalg.solve(lhs, (aw.transpose(1, 2) @ y[..., None]))[..., 0]


def read_face(frames):
    """uint8 crops (T, R, R, 3) -> dict of (T,) float arrays: smile, blush, tilt, brow, eyes, eye_y (module doc)."""
    f = torch.as_tensor(np.asarray(frames)).float() / 255
    if f.shape[-2] > READ_RES:
        f = F.interpolate(f.movedim(-1, 1), size=(READ_RES, READ_RES), mode="area").movedim(1, -1)
    res = f.shape[-2]

    def box(frac):
        x0, y0, x1, y1 = face.region(frac, res)
        return f[:, y0:y1, x0:x1]                                            # (T, h, w, 3)

    skin = box((0.30, 0.45, 0.70, 0.58)).flatten(1, 2).median(1).values       # (T, 3) cheeks and nose
    rows = lambda x: torch.arange(x.shape[1], dtype=torch.float32)[None, :, None]
    out = {}

    # mouth: per column, the centroid row of what is redder than skin (lips; the interior too), inside
    # the ellipse where lips lie
    m = box(MOUTH)
    x0, y0, x1, y1 = face.region(MOUTH, res)
    oval = face.region_mask(MOUTH, res, oval=True)[y0:y1, x0:x1] > 0.5     # not the jaw line beside the chin
    red = (_ratio(m) - _ratio(skin)[:, None, None]).clamp(min=0) * oval     # (T, h, w)
    top = red.flatten(1).amax(1)[:, None, None].clamp(min=1e-3)
    red = red * (red > 0.4 * top)
    mass = red.sum(1)                                                        # (T, w)
    cy = (red * rows(m)).sum(1) / mass.clamp(min=1e-3)                       # (T, w) centroid row per column
    on = red.amax(1) > 0.4 * top[:, 0]                                       # columns holding the mouth
    xs = torch.arange(m.shape[2], dtype=torch.float32)[None]
    left = torch.where(on, xs, torch.inf).amin(1, keepdim=True)
    right = torch.where(on, xs, -torch.inf).amax(1, keepdim=True)
    across = (xs - (left + right) / 2) / ((right - left) / 2).clamp(min=1)   # -1 .. 1 over the mouth
    # the lip line as a parabola over the mouth: corners above the centre = a smile
    out["smile"] = -_fit(cy, across, mass * on)[:, 2] / res

    # cheeks vs nose
    cheeks = torch.cat([box((0.30, 0.56, 0.40, 0.66)), box((0.60, 0.56, 0.70, 0.66))], 2)
    out["blush"] = _ratio(cheeks).mean((1, 2)) - _ratio(box((0.44, 0.45, 0.56, 0.52))).mean((1, 2))

    # eyes: the whites are the only near-white, colourless pixels there (min channel far above skin's,
    # red - blue far below it: a lit cheek is bright too); the brow is the strongest non-skin band above them
    brow, eyes, eye_y, tilt = 0, 0, 0, 0
    for side, inner_right in (((0.29, 0.26, 0.48, 0.52), True), ((0.52, 0.26, 0.71, 0.52), False)):  # left eye first
        e = box(side)
        low = skin.min(-1).values[:, None, None]
        chroma = (skin[:, 0] - skin[:, 2])[:, None, None].clamp(min=0.05)
        white = ((e.min(-1).values - low - 0.08) / (0.9 - low - 0.08).clamp(min=0.05)).clamp(0, 1)
        white = white * (1 - (e[..., 0] - e[..., 2]) / chroma).clamp(0, 1)       # colourless: not lit skin
        # cubed: only near-white counts. A grey fringe over the eyes is colourless and brighter than dark
        # skin; counted a little per pixel it outweighed the whites, and identity 149's sighs (lids half
        # shut, plain to see) read 2 % smaller eyes, 7 % of its sigh frames as sighs (cubed: 53 % smaller)
        white = white ** 3
        area = white.sum((1, 2)).clamp(min=1e-3)
        ey = (white * rows(e)).sum((1, 2)) / area                           # (T,) eye centre row
        d = (e - skin[:, None, None]).norm(dim=-1)
        band = (rows(e) < ey[:, None, None] - 2.5) & (rows(e) > ey[:, None, None] - 9.5)
        d = d * band
        d = d * (d > 0.5 * d.amax((1, 2), keepdim=True))
        by = (d * rows(e)).sum((1, 2)) / d.sum((1, 2)).clamp(min=1e-3)
        brow, eyes, eye_y = brow + (ey - by) / 2, eyes + area / 2, eye_y + ey / 2
        # sadness lifts the brows' inner ends: the brow's centroid row per column, fitted by a line
        cols = d.sum(1)                                                      # (T, w)
        line = (d * rows(e)).sum(1) / cols.clamp(min=1e-3)
        slope = _fit(line, torch.arange(e.shape[2], dtype=torch.float32)[None].expand_as(line), cols)[:, 1]
        tilt = tilt + (-slope if inner_right else slope) / 2                 # rows per column, inner end up
    out["brow"], out["eyes"], out["tilt"], out["eye_y"] = brow / res, eyes / res ** 2, tilt, eye_y / res
    return {k: v.numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------- emotion

# read valence / arousal = (features - the face's mean) @ SLOPES: what calibrate() fits on 40 training
# identities x a 3 x 3 grid of held emotions (3 s each). On the 10 test identities it reads r 0.991 (valence)
# and 0.924 (arousal) with the truth; alone, smile 0.99, blush 0.86, tilt -0.30 with valence, brow 0.58,
# eyes 0.92 with arousal (tests/test_expression.py checks it)
SLOPES = np.array([[60.906, -4.0854], [5.2839, 1.0836], [-0.0089219, 0.078263], [0.042409, 15.287], [81.528, 3880.2]])


def emotion_features(frames):
    """One segment of a held emotion, uint8 (T, R, R, 3) -> (5,) FEATURES: medians over its frames, but
    the eyes' upper quartile (blinks close them)."""
    r = read_face(frames)
    return np.array([np.median(r["smile"]), np.median(r["blush"]), np.median(r["tilt"]), np.median(r["brow"]),
                     np.quantile(r["eyes"], 0.75)])


def _centred(x, faces):
    x = np.array(x, dtype=np.float64)
    for k in np.unique(faces):
        x[faces == k] -= x[faces == k].mean(0)
    return x


def fit_slopes(feats, truth, faces):
    """Least squares from face-centred features (N, 5) to face-centred (valence, arousal) (N, 2) -> (5, 2)."""
    x, y = _centred(feats, faces), _centred(truth, faces)
    scale = x.std(0) + 1e-9
    w, *_ = np.linalg.lstsq(x / scale, y, rcond=None)
    return w / scale[:, None]


def emotion_r(feats, asked, faces, slopes=None):
    """r between read and asked-for valence, and arousal, within each face: feats (N, 5), asked (N, 2),
    faces (N,) -> (r_valence, r_arousal)."""
    faces = np.asarray(faces)
    read = _centred(feats, faces) @ (SLOPES if slopes is None else slopes)
    want = _centred(asked, faces)
    return tuple(metrics.pearson(read[:, k], want[:, k]) for k in (0, 1))


GRID = [(v, a) for v in (-0.8, 0.0, 0.8) for a in (-0.8, 0.0, 0.8)]


def truth_set(identities, seconds=3.0, res=64):
    """SynthTalk's own faces holding each GRID emotion while speaking -> feats (N, 5), truth (N, 2), faces (N,)."""
    feats, truth, faces = [], [], []
    for i in identities:
        for k, (v, a) in enumerate(GRID):
            clip = synth.make_clip(i, 1000 + k, seconds=seconds, res=res, nsv=0, valence=v, arousal=a)
            feats.append(emotion_features(clip["video"]))
            truth.append((v, a))
            faces.append(i)
    return np.array(feats), np.array(truth), np.array(faces)


def calibrate(n=40):
    """Fit SLOPES on n training identities (what the constant above holds) -> (5, 2)."""
    return fit_slopes(*truth_set(_training_ids(n)))


def _training_ids(n):
    return [i for i in range(10 * n) if synth.split_of(i) == "train"][:n]


# ----------------------------------------------------------------------------- laughs and sighs

EVENTS = ("other", "laugh", "sigh")


def _running(x, k, fn):
    """fn (np.min, np.median, ...) over a centred window of k frames, edges repeated -> same length."""
    p = np.pad(x, (k // 2, k // 2), mode="edge")
    return fn(np.lib.stride_tricks.sliding_window_view(p, k), axis=-1)


def event_features(frames):
    """uint8 (T, R, R, 3) -> (T, 7) per-frame features against the clip's resting face: the opening's min and mean over 5 frames (a laugh's jaw pumps at 5 Hz and never closes) and
    its spread over 9 (a sigh holds it still), the smile over the rest, the eyes' area and height over the
    rest (7-frame medians: a blink is 4 frames; a sigh lowers the lids and the head), a constant."""
    r = read_face(frames)
    op = synth.read_mouth(frames)["open"]
    # the resting face: the quartile away from what laughs (smile up) and sighs (eyes smaller and lower) do,
    # as a clip may laugh or sigh for nearly half its length
    eyes = _running(r["eyes"], 7, np.median)
    eyes = eyes / max(float(np.quantile(eyes, 0.75)), 1e-6) - 1
    smile = (r["smile"] - np.quantile(r["smile"], 0.25)) * READ_RES           # in pixels
    drop = _running(r["eye_y"], 7, np.median)
    drop = (drop - np.quantile(drop, 0.25)) * READ_RES                       # pixels down: the head and the lids
    return np.stack([_running(op, 5, np.min), _running(op, 5, np.mean), _running(op, 9, np.std), smile, eyes, drop,
                     np.ones_like(op)], 1)


# multinomial logistic weights over event_features -> EVENTS: what calibrate_events() fits on 40 training
# identities' 8 s clips (SynthTalk's laugh / sigh labels). On the 10 test identities' clips it reads 93.9 % of
# laugh frames as laughs, 84.6 % of sigh frames as sighs and 89.7 % of the others as neither (the eval's
# laugh- and sigh-rich speech of 10 other faces: 95.8 / 90.1 / 89.1 %)
EVENT_W = np.array([[-2.0083, 1.1256, 0.88276], [-4.9082, 5.4278, -0.51957], [1.8778, 6.2977, -8.1756],
                    [-0.41565, 1.8934, -1.4778], [2.5634, 0.81861, -3.382], [0.10235, 0.0005137, -0.10286],
                    [3.7618, -4.8196, 1.0578]])


def read_events(frames, w=None):
    """Per-frame reading of uint8 crops (T, R, R, 3) -> (T,) int: 0 neither, 1 laugh, 2 sigh (EVENTS)."""
    return (event_features(frames) @ (EVENT_W if w is None else w)).argmax(1)


def events_truth(labels):
    """SynthTalk's per-frame labels (speech.LABELS) -> EVENTS indices."""
    labels = np.asarray(labels)
    return np.where(labels == LAUGH, 1, np.where(labels == SIGH, 2, 0))


def fit_events(feats, target, steps=3000, lr=0.5):
    """Class-balanced multinomial logistic regression, feats (N, 7), target (N,) -> weights (7, 3)."""
    scale = np.abs(feats).max(0) + 1e-9
    x = feats / scale
    y = np.eye(len(EVENTS))[target]
    weight = 1 / np.maximum(y.sum(0), 1)                                    # each class counts the same
    w = np.zeros((x.shape[1], len(EVENTS)))
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= lr * x.T @ ((p - y) * (y @ weight)[:, None]) / len(EVENTS)
    return w / scale[:, None]


def event_set(identities, seconds=8.0, res=64, nsv=0.6):
    """SynthTalk clips with many laughs and sighs -> per-frame feats (N, 7), EVENTS targets (N,)."""
    feats, target = [], []
    for i in identities:
        clip = synth.make_clip(i, 2000, seconds=seconds, res=res, nsv=nsv)
        feats.append(event_features(clip["video"]))
        target.append(events_truth(clip["gt"]["label"]))
    return np.concatenate(feats), np.concatenate(target)


def calibrate_events(n=40):
    """Fit EVENT_W on n training identities (what the constant above holds) -> (7, 3)."""
    return fit_events(*event_set(_training_ids(n)))


def recall(read, target):
    """Per EVENTS class, the fraction of its frames read as it -> dict."""
    return {c: float((read[target == k] == k).mean()) if (target == k).any() else float("nan")
            for k, c in enumerate(EVENTS)}

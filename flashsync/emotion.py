"""Emotion control for KeyFace: named emotions, schedules over time, per-frame (valence, arousal).

Valence (displeasure -1 .. pleasure +1) and arousal (sleepy -1 .. excited +1), SynthTalk's
scale. The named emotions sit on Russell's circumplex of affect (J. A. Russell, "A circumplex
model of affect", J. Personality and Social Psychology 39(6), 1980), whose abstract places the
affect concepts on a circle: pleasure 0°, excitement 45°, arousal 90°, distress 135°,
displeasure 180°, depression 225°, sleepiness 270°, relaxation 315°. Each name below takes the
direction of the concept it names (happy = pleasure, angry = distress, sad = depression,
calm = relaxation, surprised = arousal, ...) at 0.9 of the full scale, so the accentuated
values stay near the range the model was trained on. The NRC VAD lexicon (S. M. Mohammad,
ACL 2018) puts the words in the same quadrants: anger (-0.67, +0.73), sadness (-0.90, -0.42),
excitement (+0.79, +0.37) on the same [-1, 1] scale.

    track(n, emotion="0:neutral,4:happy,8:sad")   -> (n, 2) float32, linear between the times
    track(n, valence=0.5, arousal=-0.2)           -> constant
    track(n)                                      -> None: no emotion given (KeyFace's "unknown")
"""
import difflib
import math

import numpy as np

from flashsync import FPS
from flashsync.util import UserError

_DEGREES = {"happy": 0, "pleased": 0, "excited": 45, "surprised": 90, "alert": 90, "angry": 135, "afraid": 135,
            "unhappy": 180, "sad": 225, "depressed": 225, "tired": 270, "sleepy": 270, "relaxed": 315, "calm": 315}
RADIUS = 0.9
EMOTIONS = {name: (round(RADIUS * math.cos(math.radians(d)), 3) + 0.0, round(RADIUS * math.sin(math.radians(d)), 3) + 0.0)
            for name, d in _DEGREES.items()}
EMOTIONS["neutral"] = (0.0, 0.0)


def lookup(name):
    """(valence, arousal) of a named emotion, or one clear error with the nearest names."""
    key = name.strip().lower()
    if key in EMOTIONS:
        return EMOTIONS[key]
    close = difflib.get_close_matches(key, EMOTIONS, n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(sorted(EMOTIONS))}"
    raise UserError(f"unknown emotion {name!r}{hint}")


def parse(spec):
    """'happy' or '0:neutral,4:happy,8:sad' (seconds:name, times increasing) -> [(seconds, (v, a)), ...]."""
    items = [s.strip() for s in spec.split(",")]
    if len(items) == 1 and ":" not in items[0]:
        return [(0.0, lookup(items[0]))]
    out = []
    for item in items:
        t, sep, name = item.partition(":")
        try:
            t = float(t)
        except ValueError:
            t = None
        if not sep or t is None or not math.isfinite(t) or t < 0 or not name.strip():
            raise UserError(f"--emotion {spec!r}: {item!r} is not seconds:name (e.g. \"0:neutral,4:happy,8:sad\")")
        if out and t <= out[-1][0]:
            raise UserError(f"--emotion {spec!r}: times must increase ({t:g} s after {out[-1][0]:g} s)")
        out.append((t, lookup(name)))
    return out


def track(n, emotion="", valence=None, arousal=None, accentuate=1.0):
    """Per-frame (valence, arousal) (n, 2) float32 for n frames at 25 fps, or None when nothing is asked.

    emotion: a name or a schedule (parse); valence / arousal: numbers that replace that coordinate;
    accentuate: multiplies both (KeyFace uses 1.5 to make the expression stronger)."""
    if not emotion and valence is None and arousal is None:
        return None
    points = parse(emotion) if emotion else [(0.0, EMOTIONS["neutral"])]
    t = np.arange(n) / FPS
    times = np.array([p[0] for p in points])
    out = np.stack([np.interp(t, times, [p[1][k] for p in points]) for k in (0, 1)], 1)
    for k, given in enumerate((valence, arousal)):
        if given is not None:
            if not math.isfinite(given) or abs(given) > 1:
                raise UserError(f"--{('valence', 'arousal')[k]}={given}: give a number from -1 to 1")
            out[:, k] = given
    return (out * accentuate).astype(np.float32)

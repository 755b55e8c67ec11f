"""SynthTalk's phoneme inventory: what each of its 39 phonemes (and pauses, laughs, sighs) does to the
lips and to the vocal tract, the syllable edges English uses, and the noise each place of articulation
makes. speech.py builds timelines, mouth tracks and sound from these tables.
"""
import collections

SILENCE, SPEECH, LAUGH, SIGH = 0, 1, 2, 3
LABELS = ("silence", "speech", "laugh", "sigh")

# kind: pause vowel nasal stop affricate fricative approximant aspirate laugh sigh
# mouth: lip targets (open, width, round, teeth); lock: 1 holds them, 0 takes the next vowel's
# formants: F1-F3 of an adult male in Hz (a consonant's: the loci the tract heads for)
# ms: duration range at speaking rate 1; place: where a consonant closes or hisses,
# a diphthong's second vowel
Phone = collections.namedtuple("Phone", "kind voiced mouth lock formants ms place")
P = Phone
PHONEMES = {
    "sil": P("pause", 0, (-0.3, 0.5, 0.0, 0.0), 1.0, (500, 1500, 2500), (60, 120), None),
    # vowels (Peterson & Barney style averages; DESIGN.md §3 for a, i, u)
    "a": P("vowel", 1, (1.0, 0.65, 0.0, 0.4), 1.0, (730, 1090, 2440), (90, 170), None),
    "ae": P("vowel", 1, (0.9, 0.8, 0.0, 0.6), 1.0, (660, 1720, 2410), (90, 170), None),
    "ah": P("vowel", 1, (0.7, 0.6, 0.0, 0.4), 1.0, (640, 1190, 2390), (60, 120), None),
    "e": P("vowel", 1, (0.6, 0.85, 0.0, 0.7), 1.0, (530, 1840, 2480), (70, 140), None),
    "i": P("vowel", 1, (0.3, 1.0, 0.0, 0.9), 1.0, (270, 2290, 3010), (80, 150), None),
    "ih": P("vowel", 1, (0.4, 0.9, 0.0, 0.8), 1.0, (390, 1990, 2550), (50, 100), None),
    "o": P("vowel", 1, (0.75, 0.35, 0.8, 0.2), 1.0, (570, 840, 2410), (90, 170), None),
    "u": P("vowel", 1, (0.25, 0.15, 1.0, 0.0), 1.0, (300, 870, 2240), (80, 150), None),
    "uh": P("vowel", 1, (0.35, 0.35, 0.6, 0.2), 1.0, (440, 1020, 2240), (50, 100), None),
    "er": P("vowel", 1, (0.35, 0.5, 0.4, 0.4), 1.0, (490, 1350, 1690), (80, 150), None),
    "schwa": P("vowel", 1, (0.4, 0.6, 0.0, 0.4), 0.6, (500, 1500, 2500), (40, 80), None),
    "ai": P("vowel", 1, (0.95, 0.7, 0.0, 0.5), 1.0, (730, 1090, 2440), (130, 220), "ih"),
    "au": P("vowel", 1, (0.95, 0.6, 0.1, 0.4), 1.0, (730, 1090, 2440), (130, 220), "uh"),
    "ei": P("vowel", 1, (0.6, 0.85, 0.0, 0.7), 1.0, (530, 1840, 2480), (120, 200), "i"),
    "ou": P("vowel", 1, (0.7, 0.4, 0.7, 0.2), 1.0, (570, 840, 2410), (120, 200), "u"),
    "oi": P("vowel", 1, (0.75, 0.35, 0.8, 0.2), 1.0, (570, 840, 2410), (140, 230), "i"),
    # consonants
    "p": P("stop", 0, (-0.5, 0.5, 0.0, 0.0), 1.0, (250, 800, 2200), (55, 100), "lab"),
    "b": P("stop", 1, (-0.5, 0.5, 0.0, 0.0), 1.0, (250, 800, 2200), (50, 90), "lab"),
    "m": P("nasal", 1, (-0.5, 0.5, 0.0, 0.0), 1.0, (250, 900, 2200), (55, 110), "lab"),
    "f": P("fricative", 0, (0.06, 0.6, 0.0, 1.0), 0.9, (350, 1100, 2300), (70, 120), "labdent"),
    "v": P("fricative", 1, (0.06, 0.6, 0.0, 1.0), 0.9, (350, 1100, 2300), (45, 90), "labdent"),
    "th": P("fricative", 0, (0.15, 0.65, 0.0, 1.0), 0.7, (350, 1400, 2600), (70, 110), "dent"),
    "dh": P("fricative", 1, (0.15, 0.65, 0.0, 1.0), 0.7, (350, 1400, 2600), (35, 70), "dent"),
    "t": P("stop", 0, (0.22, 0.6, 0.0, 0.7), 0.5, (350, 1800, 2700), (50, 90), "alv"),
    "d": P("stop", 1, (0.22, 0.6, 0.0, 0.7), 0.5, (350, 1800, 2700), (40, 75), "alv"),
    "n": P("nasal", 1, (0.22, 0.6, 0.0, 0.6), 0.5, (250, 1700, 2600), (50, 90), "alv"),
    "s": P("fricative", 0, (0.18, 0.8, 0.0, 1.0), 0.6, (350, 1700, 2700), (70, 130), "alv"),
    "z": P("fricative", 1, (0.18, 0.8, 0.0, 1.0), 0.6, (350, 1700, 2700), (50, 100), "alv"),
    "l": P("approximant", 1, (0.3, 0.6, 0.0, 0.5), 0.4, (360, 1300, 2700), (45, 85), "alv"),
    "r": P("approximant", 1, (0.25, 0.45, 0.5, 0.3), 0.5, (420, 1300, 1600), (45, 85), "post"),
    "sh": P("fricative", 0, (0.22, 0.45, 0.7, 0.8), 0.8, (350, 1900, 2500), (80, 130), "post"),
    "ch": P("affricate", 0, (0.22, 0.45, 0.7, 0.8), 0.8, (350, 1900, 2500), (80, 130), "post"),
    "jh": P("affricate", 1, (0.22, 0.45, 0.7, 0.8), 0.8, (350, 1900, 2500), (60, 110), "post"),
    "y": P("approximant", 1, (0.3, 0.9, 0.0, 0.8), 0.6, (280, 2200, 3000), (40, 75), "pal"),
    "k": P("stop", 0, (0.35, 0.55, 0.0, 0.3), 0.3, (300, 2000, 2500), (55, 95), "vel"),
    "g": P("stop", 1, (0.35, 0.55, 0.0, 0.3), 0.3, (300, 2000, 2500), (45, 80), "vel"),
    "ng": P("nasal", 1, (0.35, 0.55, 0.0, 0.3), 0.3, (250, 2000, 2600), (55, 95), "vel"),
    "w": P("approximant", 1, (0.12, 0.2, 1.0, 0.0), 0.9, (300, 610, 2200), (45, 80), "lab"),
    "h": P("aspirate", 0, (0.5, 0.6, 0.0, 0.3), 0.0, (500, 1500, 2500), (45, 80), "glot"),
    # non-speech
    "breath": P("pause", 0, (-0.3, 0.5, 0.0, 0.0), 1.0, (500, 1500, 2500), (300, 700), "nose"),
    "laugh": P("laugh", 1, (0.75, 0.9, 0.0, 0.8), 1.0, (730, 1200, 2500), (0, 0), None),
    "sigh": P("sigh", 0, (0.35, 0.5, 0.1, 0.0), 1.0, (600, 1200, 2400), (0, 0), None),
}
NAMES = list(PHONEMES)
ID = {name: i for i, name in enumerate(NAMES)}
BILABIALS = ("m", "p", "b")
VOWELS = [n for n, p in PHONEMES.items() if p.kind == "vowel"]
FULL = ["a", "ae", "ah", "e", "i", "ih", "o", "u", "uh", "er", "ai", "au", "ei", "ou", "oi"]
REDUCED = ["schwa", "schwa", "schwa", "ih", "er"]
# syllable edges, weighted roughly by how often English uses them
ONSETS = (["p", "b", "m"] * 3 + ["t", "d", "n", "k", "g", "f", "v", "s", "z", "sh", "ch", "jh", "th", "dh", "l",
                                   "r", "w", "y", "h", "h"]
           + ["pl", "pr", "bl", "br", "sp", "sm", "st", "tr", "kr", "kl", "fl", "fr", "gr", "sl", "sn", "sw", "kw"])
CODAS = (["m", "p", "b"] * 2 + ["n", "n", "t", "t", "d", "k", "s", "z", "l", "ng", "f", "v", "th", "r", "ch"]
          + ["mp", "mb", "nd", "nt", "st", "ks", "ts", "lp", "lm", "mz", "ps", "pt", "ns", "ld"])
CLUSTER = {"pl": ["p", "l"], "pr": ["p", "r"], "bl": ["b", "l"], "br": ["b", "r"], "sp": ["s", "p"],
            "sm": ["s", "m"], "st": ["s", "t"], "tr": ["t", "r"], "kr": ["k", "r"], "kl": ["k", "l"],
            "fl": ["f", "l"], "fr": ["f", "r"], "gr": ["g", "r"], "sl": ["s", "l"], "sn": ["s", "n"],
            "sw": ["s", "w"], "kw": ["k", "w"], "mp": ["m", "p"], "mb": ["m", "b"], "nd": ["n", "d"],
            "nt": ["n", "t"], "ks": ["k", "s"], "ts": ["t", "s"], "lp": ["l", "p"], "lm": ["l", "m"],
            "mz": ["m", "z"], "ps": ["p", "s"], "pt": ["p", "t"], "ns": ["n", "s"], "ld": ["l", "d"]}
MIN_CLOSURE = 0.055     # s: a bilabial never lasts less, so the lips have time to meet
# noise of fricatives and of stop releases by place: (centre Hz, width in octaves, level)
HISS = {"labdent": (6000, 3.0, 0.10), "dent": (5500, 3.0, 0.08), "alv": (6500, 0.8, 0.5),
         "post": (3500, 0.9, 0.45), "glot": (1500, 3.0, 0.0)}
BURST = {"lab": (1200, 3.0, 0.25), "alv": (4500, 1.2, 0.6), "post": (3500, 0.9, 0.5), "vel": (2200, 0.8, 0.6)}
VOT = {"lab": 0.035, "alv": 0.045, "post": 0.05, "vel": 0.055}        # s of aspiration after p t ch k
ANTI = {"lab": 1000.0, "alv": 1700.0, "vel": 3000.0}                  # nasal anti-resonance, Hz

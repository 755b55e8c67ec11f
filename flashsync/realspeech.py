"""Lip-sync on speech SynthTalk never made (DESIGN.md §5, "real speech"): `python -m flashsync.eval --speech=DIR`.

DIR holds English sentences, NAME.wav (any rate) with NAME.json = {"phonemes": [[name, start s], ...]}
(espeak-style mnemonics), e.g. ../shared/media/speech. Each file drives SynthTalk test faces (their
video played forwards-backwards over the speech); the analytic reader measures the output's mouth
and metrics.speech_marks scores it: closure on p/b/m, opening on open vowels, open mouths in pauses.

The pauses of a file are found on its clean audio; then the same file is also driven with a noise
floor mixed in (white, pink, brown, mains hum, breath; -60 .. -30 dB RMS re the speech's peak),
which is what a real microphone adds: the mouth must still close, open and stay shut in the pauses.
"""
import glob
import json
import os

import numpy as np
import torch

from flashsync import SAMPLES_PER_FRAME, metrics
from flashsync.audio import load_audio
from flashsync.augment import add_noise
from flashsync.util import UserError
from flashsync.video import bounce

RATES = ("closure", "opening", "pause_open")


def load_speech(folder):
    """The speech files of a folder -> [dict(name, audio (N,) 16 kHz tensor, spans, pauses (T,) bool)]."""
    paths = sorted(glob.glob(os.path.join(folder, "*.json")))
    out = []
    for path in paths:
        wav = path[:-5] + ".wav"
        if not os.path.exists(wav):
            continue
        try:
            with open(path) as f:
                phonemes = json.load(f)["phonemes"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a phoneme file ({{\"phonemes\": [[name, start], ...]}}): {e}") from None
        audio = load_audio(wav)
        out.append(dict(name=os.path.basename(path)[:-5], audio=audio, spans=metrics.phoneme_spans(phonemes),
                        pauses=metrics.pause_frames(audio)))
    if not out:
        raise UserError(f"--speech {folder}: no NAME.wav + NAME.json pairs there")
    return out


def drive(method, clip, audio, seed):
    """A suite method on a test clip, its video bounced forwards-backwards over the audio -> reader openings (T,)."""
    n = -(-len(audio) // SAMPLES_PER_FRAME)
    idx = bounce(len(clip["frames"]), n)
    sub = dict(clip, frames=clip["frames"][idx], occluder=None)
    audio = torch.nn.functional.pad(torch.as_tensor(audio), (0, n * SAMPLES_PER_FRAME - len(audio)))
    return metrics.opening(method(sub, audio, None, seed))


def score(method, clips, files, faces, noise=None, level=None):
    """Mean rates of one method over files (each driving `faces` test clips) -> {file name: rates}, pooled over faces."""
    per_file = {}
    for j, f in enumerate(files):
        audio = f["audio"]
        if noise is not None:
            g = torch.Generator().manual_seed(1000 * j + 7)
            audio = add_noise(audio, noise, level, g)
        marks = [metrics.speech_marks(drive(method, clips[(j * faces + k) % len(clips)], audio, k),
                                      f["spans"], f["pauses"]) for k in range(faces)]
        per_file[f["name"]] = {r: float(np.nanmean([m[r] for m in marks])) for r in RATES}
    return per_file


def mean(per_file):
    return {r: float(np.nanmean([v[r] for v in per_file.values()])) for r in RATES}


def report(methods, clips, files, faces=2, noises=(), levels=()):
    """Per file and mean rates for each method on clean speech; means under each noise floor and level.
    -> dict(clean={method: {file: rates, "mean": rates}}, noisy={method: {"kind dB": rates}})."""
    clean, noisy = {}, {}
    for name, method in methods.items():
        per_file = score(method, clips, files, faces)
        clean[name] = dict(per_file, mean=mean(per_file))
        if name == "copy":                      # the source's own mouth does not hear the noise
            continue
        # the noise floor is heard, not seen: one face per file is enough here
        noisy[name] = {f"{kind} {db:g} dB": mean(score(method, clips, files, 1, kind, db))
                       for kind in noises for db in levels}
    return dict(clean=clean, noisy=noisy)

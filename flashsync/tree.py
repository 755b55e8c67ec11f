"""A dataset tree of talking-face videos: which files are videos, whose speaker each is, which split
each speaker goes to, the clip names, and the tables of face boxes a user gives (prepare.py turns the
tree into clips).

The speaker is the first folder under ROOT (LRS3 ROOT/<speaker>/<clip>.mp4, VoxCeleb2
ROOT/<speaker>/<video>/<clip>.mp4), or for a file directly in ROOT its name without a trailing
_<number> (HDTF's WRA_KimSchrier_000 and _001 are one person), or group 1 of the regular expression
--speaker_of matched against the path under ROOT.

Split by speaker, so no identity is in two splits, by a fixed rule: u = sha1(speaker) as a number in
[0, 1); u < val -> val, u < val + test -> test, else train. With 3 speakers or more, an empty val or
test split takes the train speaker with the smallest u (fewer: all train). Same tree, same split, on
every machine; a speaker added later never moves an old one (except by the empty-split rule).
"""
import csv
import hashlib
import json
import os
import re

from flashsync import face
from flashsync.util import UserError, check_file

VIDEO_EXT = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".wmv",
             ".3gp", ".ogv"}


def find_videos(root, skip=""):
    """Paths under root (relative, '/'-separated, sorted) of the files with a video extension, and a count
    of the other files by extension (transcripts, box files: not an error). Follows links to folders,
    each real folder once (no cycles); `skip`: a folder not to enter (the output inside the tree)."""
    if not os.path.isdir(root):
        raise UserError(f"{root} is not a directory")
    found, other, seen = [], {}, set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen or real == skip:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            if f.startswith("."):
                continue
            ext = os.path.splitext(f)[1].lower()
            rel = os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            if ext in VIDEO_EXT:
                found.append(rel)
            else:
                other[ext or "(none)"] = other.get(ext or "(none)", 0) + 1
    return sorted(found), other


def speaker_of(rel, pattern=""):
    """The speaker of a video at path rel under the root (see the module docstring)."""
    if pattern:
        m = re.search(pattern, rel)
        if not m or not m.group(1):
            raise UserError(f"--speaker_of {pattern!r} does not give a speaker for {rel!r} (group 1 of the "
                            f"expression, e.g. --speaker_of='^([^/]+)/')")
        return m.group(1)
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else re.sub(r"_\d+$", "", os.path.splitext(parts[0])[0])


def assign_splits(speakers, val=0.05, test=0.05):
    """{speaker: 'train' | 'val' | 'test'} by the fixed rule in the module docstring; train is never empty."""
    u = {s: int(hashlib.sha1(s.encode()).hexdigest()[:15], 16) / 16 ** 15 for s in speakers}
    split = {s: "val" if v < val else "test" if v < val + test else "train" for s, v in u.items()}
    if len(u) < 3:
        return {s: "train" for s in u}
    for name, frac in (("val", val), ("test", test)):
        if frac > 0 and name not in split.values():
            split[min((s for s in u if split[s] == "train"), key=u.get)] = name
    if "train" not in split.values():
        split[max(u, key=u.get)] = "train"
    return split


def clip_names(videos):
    """{path: clip directory name}: 'id001/abc/00001.mp4' -> 'id001__abc__00001' (letters of any script
    kept); paths that would share a name get a hash of the path appended."""
    names = {rel: re.sub(r"[^\w.-]", "_", os.path.splitext(rel)[0].replace("/", "__")) for rel in videos}
    count = {}
    for n in names.values():
        count[n] = count.get(n, 0) + 1
    return {rel: n if count[n] == 1 else f"{n}_{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
            for rel, n in names.items()}


def load_boxes(path):
    """--boxes FILE -> {path under the root: first-frame box (x, y, w, h), a list of per-frame boxes, or the
    path of a per-frame box file (read by the worker: a bad one skips that video, not the run)}.

    CSV: rows 'path,x,y,w,h' or 'path,boxfile' (a per-frame box file from any detector, one 'x,y,w,h' a
    line, relative to the CSV's folder); a header row and '#' lines are skipped.
    JSON: {"path": [x, y, w, h] | [[x, y, w, h], ...] | "boxfile"}."""
    check_file(path, "box table")
    here = os.path.dirname(os.path.abspath(path))
    where = lambda f: f if os.path.isabs(f) else os.path.join(here, f)
    key = lambda k: k.strip().replace("\\", "/").removeprefix("./")       # as find_videos names them
    table = {}
    if path.lower().endswith(".json"):
        try:
            with open(path) as f:
                raw = json.load(f)
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f'{path}: expected an object {{"path under the root": [x, y, w, h], ...}}')
        for k, v in raw.items():
            try:
                table[key(k)] = (where(v) if isinstance(v, str) else
                                 [face.parse_box(",".join(map(str, b))) for b in v] if v and isinstance(v[0], list)
                                 else face.parse_box(",".join(map(str, v))))
            except (UserError, TypeError) as e:
                raise UserError(f"{path}, entry {k!r}: {e}") from None
        return table
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            if len(row) == 2:
                table[key(row[0])] = where(row[1])
            elif len(row) == 5:
                try:
                    table[key(row[0])] = face.parse_box(",".join(row[1:]))
                except UserError as e:
                    if n == 1:               # a header row: path,x,y,w,h or name,left,top,...
                        continue
                    raise UserError(f"{path} line {n}: {e}") from None
            else:
                raise UserError(f"{path} line {n}: expected 'path,x,y,w,h' or 'path,boxfile' ({len(row)} fields)")
    return table

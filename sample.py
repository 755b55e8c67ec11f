"""Lip-sync a video, or animate a still face, to new speech with FlashLips (or KeySync, KeyFace).

    python sample.py --video in.mp4 --audio speech.wav --box x,y,w,h --out out.mp4
    python sample.py --video face.png --audio speech.wav --out talking.mp4 --compare
    python sample.py --method=keysync --video in.mp4 --audio speech.wav --occluder_masks masks.mp4
    python sample.py --method=keyface --image face.png --audio speech.wav --emotion "0:neutral,4:happy"

KeyFace (--method=keyface) animates one face image from the audio alone: head, eyes, brows
and mouth all move, with the emotion asked for (--emotion, --valence, --arousal; none:
the emotion the audio implies) and laughs and sighs where the audio has them.

KeySync (--method=keysync) regenerates the whole lower face with its keyframe and
interpolation diffusion models, window by window, keeping whatever covers the mouth
(masks from --occluder_masks, white = occluder, one per video frame; else from the
occlusion segmenter) and pastes the lower face back the same way.

The face box (x,y,w,h in pixels, first frame) is tracked through the video; the
crops go through the mask-free editor driven by lips poses that the pose model
samples from the audio, and only what the edit changed around the mouth is
pasted back, at the video's resolution and feathered, so every other pixel is the
source's (face.paste). The output has the driving audio and its
length: a shorter video plays forwards, backwards, forwards ... to cover it; a
longer one is cut. Frames are decoded, edited and encoded in chunks of `batch`,
so memory stays flat however long the input. Without --box the whole frame is
the face (SynthTalk-style crops).
"""
import itertools
import os
import sys
import time

import numpy as np
import torch

from flashsync import FPS, SAMPLES_PER_FRAME, face, video as vid
from flashsync.audio import load_audio
from flashsync.config import configure
from flashsync.lipsync import LipSync, reference_crops
from flashsync.nn import to_uint8
from flashsync.util import UserError, check_file, check_output, run_main, warn

# -----------------------------------------------------------------------------
# defaults: override with config/<name>.py or --key=value
video = ""                        # input video (any container av reads) or a still image
audio = ""                        # driving speech (any format; resampled to 16 kHz mono)
box = ""                          # x,y,w,h face box in the first frame; empty: the whole frame
boxes = ""                        # or a text file with one box per frame (from any detector)
out = "out/sample.mp4"            # the dubbed mp4 (never one of the inputs)
method = "flashlips"              # flashlips | keysync | keyface
editor = "out/refine/ckpt.pt"     # mask-free editor (or a masked 'editor' checkpoint)
pose = "out/pose/ckpt.pt"         # audio -> lips-pose model trained on that editor
steps = 6                         # Euler steps of the pose sampler
guidance = 3.0                    # audio guidance of the pose sampler (1: none; above 1 closures close and vowels open more firmly)
seed = 0                          # the pose sampler's noise
lookahead = -1                    # -1: offline (full audio context); k >= 0: streaming, k frames ahead
pose_frames = 1                   # streaming: poses sampled this many frames per window (as stream.py's)
keyframes = "out/keysync_key/ckpt.pt"       # KeySync: the keyframe model
interp = "out/keysync_interp/ckpt.pt"       # KeySync: the interpolation model
occluder_masks = ""               # KeySync: a video or image of occluder masks, one per video frame (white = occluder)
segmenter = "out/occluder/ckpt.pt"          # KeySync without a mask file: the occlusion segmenter ("": none)
ks_steps = 10                     # KeySync, KeyFace: Euler steps
s_ref = 1.0                       # KeySync, KeyFace: reference (identity) guidance
s_audio = 4.0                     # KeySync, KeyFace: audio guidance (keyframes alone, r_driving at s = 1 / 2 / 4 / 6: 0.63 / 0.76 / 0.81 / 0.83)
image = ""                        # KeyFace: the face image (any format av reads; --box: the face in a larger image)
keyface_key = "out/keyface_key/ckpt.pt"          # KeyFace: the keyframe model
keyface_interp = "out/keyface_interp/ckpt.pt"    # KeyFace: the interpolation model
emotion = ""                      # KeyFace: happy, sad, angry, calm, surprised, neutral, ... or a schedule
                                  # "0:neutral,4:happy,8:sad" (seconds:name, linear in between); "": from the audio
valence = float("nan")            # KeyFace: -1 (displeasure) .. 1 (pleasure), replaces the emotion's
arousal = float("nan")            # KeyFace: -1 (sleepy) .. 1 (excited), replaces the emotion's
s_nsv = 16.0                      # KeyFace: laugh / sigh guidance over the same audio heard as speech (0: off;
                                  # laughs / sighs read as such on the eval's 10 faces: 0 69 / 86 %, 16 81 / 87 %)
accentuate = 1.0                  # KeyFace: multiplies valence and arousal (the paper uses 1.5)
first_is_identity = False         # KeyFace: the video starts on the image itself
compare = False                   # write source | output side by side
batch = 16                        # frames edited at once
fast = False                      # the compiled static-shape step (CUDA: bf16 + CUDA graphs); see flashsync.bench
crf = 18                          # h264 quality (lower is better, bigger)
device = "auto"                   # auto | cpu | cuda
threads = 0                       # CPU threads (0: torch's default)
# -----------------------------------------------------------------------------

class Progress:
    """One line, rewritten in place on a terminal (else a line every 10 s): frames done, FPS, ETA."""

    def __init__(self, total):
        self.total, self.t0, self.last = total, time.time(), 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, done):
        now = time.time()
        if done < self.total and now - self.last < (0.5 if self.tty else 10):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6)
        line = f"frame {done}/{self.total}, {rate:.1f} fps, ETA {(self.total - done) / max(rate, 1e-6):.0f} s"
        end = "\n" if done >= self.total or not self.tty else ""
        print(("\r" if self.tty else "") + line + "   ", end=end, file=sys.stderr, flush=True)


def main():
    args = configure(globals())
    if args:
        raise UserError(f"unexpected arguments {' '.join(args)} (options are --key=value, e.g. --video in.mp4)")
    if method not in ("flashlips", "keysync", "keyface"):
        raise UserError(f"--method={method}: use flashlips, keysync or keyface")
    kf = method == "keyface"
    src = (image or video) if kf else video
    if not src or not audio:
        raise UserError("give the face and the speech: " + ("python sample.py --method=keyface --image face.png "
                        "--audio speech.wav --out out.mp4" if kf else "python sample.py --video in.mp4 --audio "
                        "speech.wav --box x,y,w,h --out out.mp4"))
    if not out.lower().endswith(".mp4"):
        raise UserError(f"--out {out}: the output is an mp4 file; give a name ending in .mp4")
    check_file(audio, "audio file")
    ks = method == "keysync"
    check_output(out, {"input video" if not kf else "face image": src, "driving audio": audio, "box file": boxes,
                       **({"keyframe checkpoint": keyframes, "interpolation checkpoint": interp,
                           "occluder masks": occluder_masks} if ks else
                          {"keyframe checkpoint": keyface_key, "interpolation checkpoint": keyface_interp} if kf else
                          {"editor checkpoint": editor, "pose checkpoint": pose})})
    if kf:                                               # a bad emotion is one line before anything loads
        from flashsync import emotion as emotions
        emotions.track(1, emotion, None if valence != valence else valence,
                             None if arousal != arousal else arousal, accentuate)
    info = vid.probe(src)                                # missing, unreadable, no video stream: one line
    wave = load_audio(audio)                             # any rate and channel count; zero length: one line
    n_out = max(1, round(wave.shape[0] / SAMPLES_PER_FRAME))
    per_frame = face.load_boxes(boxes) if boxes else None
    first = face.parse_box(box) if box else (per_frame[0] if per_frame else (0, 0, info.width, info.height))
    face.check_box(first, info.width, info.height)
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if threads:
        torch.set_num_threads(threads)
    if kf:
        return keyface(src, info, wave, n_out, first, dev)
    mask_info = check_masks(info) if ks else None
    if ks:
        lips = None
        dub = load_keysync(dev)
        res = dub.key.cfg.resolution
    else:
        lips = LipSync.load(editor, pose, dev, fast=fast, batch=batch, guidance=guidance)
        res = lips.resolution
    still = info.frames == 1
    where = face.Boxes(first, per_frame, fixed=not box and not boxes or still)

    # references: 4 frames spread over the first seconds (the stream sees nothing later either)
    frames = zip(range(info.frames), vid.read_frames(video, 0, info))
    refs = reference_crops(((f, where(i, f)) for i, f in frames), res)                # tracks in order
    if ks:
        return keysync(dub, refs[0], info, mask_info, wave, n_out, where, res)
    lips.set_reference(refs)

    t0 = time.time()
    poses = lips.poses(wave, steps, seed, lookahead, group=pose_frames)[:n_out]   # (n_out, 12)
    print(f"{n_out} frames ({n_out / FPS:.1f} s) from {info.frames} source frames"
          f"{' (a still image)' if still else ''}; poses in {time.time() - t0:.1f} s", file=sys.stderr)

    width = info.width * (2 if compare else 1)
    t0, done, report = time.time(), 0, Progress(n_out)
    with vid.VideoWriter(out, width, info.height, audio=wave, crf=crf) as writer:
        source = itertools.islice(vid.ping_pong(video, info, n_out), n_out)
        while done < n_out:                           # ping_pong never runs dry
            chunk = [(frame, where(i, frame)) for i, frame in itertools.islice(source, batch)]
            crops = np.stack([face.crop(f, b, res) for f, b in chunk])
            edited, recon = lips.edit(crops, poses[done:done + len(chunk)], recon=True)
            for (frame, b), crop, rec in zip(chunk, edited.numpy(), recon.numpy()):
                result = face.paste(frame, crop, b, rec)
                writer.write(np.concatenate([frame, result], 1) if compare else result)
            done += len(chunk)
            report(done)
    print(f"wrote {out}: {n_out} frames, {width}x{info.height}, {n_out / FPS:.2f} s with audio "
          f"({time.time() - t0:.1f} s)")


def check_masks(info):
    """The occluder mask file's probe, after checking it fits the video (None without a file)."""
    if not occluder_masks:
        return None
    check_file(occluder_masks, "occluder mask file")
    m = vid.probe(occluder_masks)
    if (m.width, m.height) != (info.width, info.height):
        raise UserError(f"--occluder_masks {occluder_masks}: masks are {m.width}x{m.height}, the video is "
                        f"{info.width}x{info.height}")
    if m.frames != info.frames:
        raise UserError(f"--occluder_masks {occluder_masks}: {m.frames} masks for {info.frames} video frames "
                        f"(one mask per frame, at 25 fps)")
    return m


def load_keysync(dev):
    """The two KeySync models, checked, in a Dubber."""
    from flashsync.keysync import Dubber
    key, between = load_pair("keysync", keyframes, interp, "python train.py keysync")
    return Dubber(key, between, ks_steps, s_ref, s_audio, seed, dev)


def keysync(dub, ref, info, mask_info, wave, n_out, where, res):
    """The KeySync path: crops stream through the Dubber window by window; each finished frame is pasted
    back (the lower face, less the occluder) and written in order."""
    import collections
    from flashsync.checkpoint import load_model
    seg = None
    if mask_info is None and segmenter:
        if os.path.exists(segmenter):
            seg = load_model(segmenter, "occluder")
        else:
            warn(f"no occluder masks and no segmenter at {segmenter}: anything in front of the mouth is repainted")
    dub.set_reference(ref)
    pending, holds = collections.deque(), collections.deque()      # frames waiting for their window to finish
    source = itertools.islice(vid.ping_pong(video, info, n_out), n_out)

    def crops():
        for i, frame in source:
            b = where(i, frame)
            c = face.crop(frame, b, res)
            pending.append((frame, b, c))
            yield c

    def masks():                                                   # pulled right after the crop it belongs to
        files = vid.ping_pong(occluder_masks, mask_info, n_out) if mask_info else itertools.repeat((0, None))
        for _, m in files:
            frame, b, c = pending[-1]
            hold = face.crop(m, b, res).mean(-1) > 127 if m is not None else seg.masks(c[None])[0].numpy()
            holds.append(hold)
            yield hold

    occ = masks() if mask_info is not None or seg is not None else None
    width = info.width * (2 if compare else 1)
    t0, done, report = time.time(), 0, Progress(n_out)
    with vid.VideoWriter(out, width, info.height, audio=wave, crf=crf) as writer:
        drive = torch.nn.functional.pad(torch.as_tensor(wave)[:n_out * SAMPLES_PER_FRAME],
                                        (0, max(0, n_out * SAMPLES_PER_FRAME - len(wave))))    # exactly n_out frames
        for _, edited, rec in dub.run(crops(), occ, drive):
            frame, b, _ = pending.popleft()
            hold = holds.popleft() if occ is not None else None
            result = face.paste(frame, edited, b, rec, region=face.LOWER_FACE, hold=hold, oval=False)
            writer.write(np.concatenate([frame, result], 1) if compare else result)
            done += 1
            report(done)
    print(f"wrote {out}: {n_out} frames, {width}x{info.height}, {n_out / FPS:.2f} s with audio, KeySync "
          f"({time.time() - t0:.1f} s)")


def load_pair(kind, key_path, interp_path, command):
    """A diffusion method's keyframe and interpolation models, each checked to be what its option names."""
    from flashsync.checkpoint import load_checkpoint, load_model
    for path, want, option in ((key_path, False, "--keyframes" if kind == "keysync" else "--keyface_key"),
                               (interp_path, True, "--interp" if kind == "keysync" else "--keyface_interp")):
        ck = load_checkpoint(path)
        if ck["kind"] != kind:
            raise UserError(f"{option} {path} holds a {ck['kind']!r} model, not {KINDS[kind]}'s (train it with "
                            f"{command})")
        if ck["config"]["interp"] != want:
            raise UserError(f"{option} {path} is {KINDS[kind]}'s {'interpolation' if not want else 'keyframe'} "
                            f"model; {option} needs the {'interpolation' if want else 'keyframe'} model")
    key, between = load_model(key_path, kind), load_model(interp_path, kind)
    if key.cfg.stride != between.cfg.stride or key.cfg.resolution != between.cfg.resolution:
        raise UserError(f"{key_path} and {interp_path} were trained for different strides or resolutions")
    return key, between


KINDS = {"keysync": "KeySync", "keyface": "KeyFace"}
KEYFACE_PASTE = (0.04, 0.04, 0.96, 0.96)     # the generated crop, feathered to the box's edge


def keyface(src, info, wave, n_out, box, dev):
    """The KeyFace path: the face of one image animated by the audio, window by window; every frame is the
    image with the generated face pasted into its box (only where it changed: the rest keeps the image's
    own pixels)."""
    from flashsync import emotion as emotions
    from flashsync.keyface import Animator
    emo = emotions.track(n_out, emotion, None if valence != valence else valence,
                         None if arousal != arousal else arousal, accentuate)
    key, between = load_pair("keyface", keyface_key, keyface_interp, "python train.py keyface")
    anim = Animator(key, between, ks_steps, s_ref, s_audio, seed, dev, s_nsv=s_nsv)
    if info.frames > 1:
        warn(f"{src} is a video: KeyFace animates its first frame")
    picture = next(iter(vid.read_frames(src, 0, info)))
    res = key.cfg.resolution
    crop = face.crop(picture, box, res)
    with torch.no_grad():
        recon = to_uint8(key.ae.decode(key.encode(torch.as_tensor(crop)[None])).float())[0].numpy()
    width = info.width * (2 if compare else 1)
    t0, done, report = time.time(), 0, Progress(n_out)
    drive = torch.nn.functional.pad(torch.as_tensor(wave)[:n_out * SAMPLES_PER_FRAME],
                                    (0, max(0, n_out * SAMPLES_PER_FRAME - len(wave))))       # exactly n_out frames
    with vid.VideoWriter(out, width, info.height, audio=wave, crf=crf) as writer:
        for generated in anim.run(crop, drive.numpy(), emo, first_is_identity):
            result = face.paste(picture, generated, box, recon, region=KEYFACE_PASTE, oval=False)
            writer.write(np.concatenate([picture, result], 1) if compare else result)
            done += 1
            report(done)
    print(f"wrote {out}: {n_out} frames, {width}x{info.height}, {n_out / FPS:.2f} s with audio, KeyFace "
          f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    run_main(main)

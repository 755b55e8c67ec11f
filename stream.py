"""Live lip-sync with FlashLips: a webcam and a microphone, or a video and an audio file played in real time.

    python stream.py --video in.mp4 --audio speech.wav --box x,y,w,h [--record out/live.mp4]
    python stream.py --camera /dev/video0 --mic default --box x,y,w,h      # Linux (v4l2 + alsa)
    python stream.py --list-devices

Every 40 ms a frame and 640 samples arrive. The audio goes through the streaming
log-mel into the pose model, which may look `lookahead` frames ahead (plus the 2
its mel convolutions reach); poses are sampled `pose_frames` frames at a time, so
frame t is edited once the audio of frame t + lookahead + 2 + pose_frames has
arrived: the latency is that many frames plus compute. The
output goes to a web page on http://127.0.0.1:PORT (MJPEG, with FPS and
latency) and/or an mp4 recording with the audio. When a frame is late the loop
drops it (the last output is shown again and the drop counted) instead of falling
behind. Ctrl-C stops cleanly and finalises the recording.
"""
import collections
import fractions
import http.server
import itertools
import os
import queue
import sys
import threading
import time

import av
import numpy as np
import torch

from flashsync import FPS, SAMPLES_PER_FRAME, face, video as vid
from flashsync.audio import LogMelStream, load_audio
from flashsync.config import configure
from flashsync.lipsync import CONTEXT, MEL_REACH, LipSync, reference_crops
from flashsync.util import UserError, check_output, run_main

# -----------------------------------------------------------------------------
# defaults: override with config/<name>.py or --key=value
video = ""                        # a video file played at real-time pace ...
audio = ""                        # ... with this speech (any format)
camera = ""                       # ... or a capture device: /dev/video0 (Linux), "0" (macOS), "video=Name" (Windows)
mic = ""                          # the microphone: "default" or hw:0 (Linux), ":0" (macOS), "audio=Name" (Windows)
list_devices = False              # print the capture devices and stop
box = ""                          # x,y,w,h face box in the first frame; empty: the whole frame
record = ""                       # mp4 to record the output (with the audio) to
record_preset = "ultrafast"       # its x264 preset: ultrafast leaves the edit loop the most time (about 2 ms a
                                  # 576x768 frame here, veryfast 4); veryfast as sample.py: smaller files
port = 8000                       # web page on http://host:port (0: none)
host = "127.0.0.1"                # loopback only; 0.0.0.0 serves the network
editor = "out/refine/ckpt.pt"     # mask-free editor
pose = "out/pose/ckpt.pt"         # audio -> lips-pose model trained on that editor
lookahead = 2                     # frames of future audio the pose model waits for
pose_frames = 2                   # poses sampled this many frames at a time, from one window: a call costs
                                  # about what one frame's does, for pose_frames - 1 frames more latency
steps = 6                         # Euler steps of the pose sampler
guidance = 3.0                    # audio guidance of the pose sampler (1: none; above 1 closures close and vowels open more firmly)
seed = 0                          # the pose sampler's noise
seconds = 0.0                     # stop after this long (0: at the end of the file, or Ctrl-C)
realtime = True                   # pace file input at 25 fps (False: as fast as possible, never drop)
fast = False                      # the compiled step (CUDA: bf16 + CUDA graphs)
device = "auto"                   # auto | cpu | cuda
threads = 0                       # CPU threads (0: torch's default)
# -----------------------------------------------------------------------------

CAPTURE = {"linux": ("v4l2", "alsa"), "darwin": ("avfoundation", "avfoundation"), "win32": ("dshow", "dshow")}
PAGE = b"""<!doctype html><title>flashsync live</title>
<body style="background:#111;color:#ddd;font-family:sans-serif;text-align:center">
<h3>flashsync live</h3><img src="/stream" style="height:70vh;image-rendering:pixelated"><p id="s"></p>
<script>setInterval(async()=>{let s=await (await fetch('/stats')).json();
document.getElementById('s').textContent=`${s.fps.toFixed(1)} FPS, latency ${s.latency_ms.toFixed(0)} ms,
${s.frames} frames, ${s.dropped} dropped`},500)</script></body>"""


class Web:
    """MJPEG over HTTP from the standard library: / (page), /stream, /frame.jpg, /stats."""

    def __init__(self, host, port):
        self.frame, self.stats, self.cond = None, dict(fps=0.0, latency_ms=0.0, frames=0, dropped=0), threading.Condition()
        self.version, self.encoded, self.body, self.lock, self.codec = 0, -1, b"", threading.Lock(), None
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, body, kind):
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/":
                    self.send(PAGE, "text/html")
                elif self.path == "/frame.jpg":
                    with web.cond:
                        web.cond.wait_for(lambda: web.frame is not None, timeout=10)
                    self.send(web.jpeg(), "image/jpeg")
                elif self.path == "/stats":
                    import json
                    self.send(json.dumps(web.stats).encode(), "application/json")
                elif self.path == "/stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.end_headers()
                    try:
                        while True:
                            with web.cond:
                                web.cond.wait(timeout=5)
                            body = web.jpeg()
                            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                             + str(len(body)).encode() + b"\r\n\r\n" + body + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    self.send_error(404)

        try:
            self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise UserError(f"cannot serve the web page on {host}:{port} ({e.strerror}); pick another --port") from None
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def show(self, frame, stats):
        """The latest output frame: the page's own threads encode it, and only while someone watches
        (a 576x768 JPEG costs a few ms that the edit loop does not have at 256 px)."""
        with self.cond:
            self.frame, self.stats, self.version = frame, stats, self.version + 1
            self.cond.notify_all()

    def jpeg(self):
        """The latest frame as JPEG bytes, encoded once however many clients ask."""
        with self.lock:
            frame, version = self.frame, self.version
            if frame is None or version == self.encoded:
                return self.body
            if self.codec is None:
                self.codec = av.CodecContext.create("mjpeg", "w")
                self.codec.width, self.codec.height = frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2
                self.codec.pix_fmt, self.codec.time_base = "yuvj420p", fractions.Fraction(1, FPS)
            f = frame[:self.codec.height, :self.codec.width]
            packets = self.codec.encode(vid.rgb_frame(f).reformat(format="yuvj420p"))
            self.body, self.encoded = (bytes(packets[0]) if packets else self.body), version
            return self.body

    def close(self):
        self.server.shutdown()


class Recorder:
    """The mp4 recording in a thread of its own, so the h264 encode (~6 ms a 576x768 frame on 2 cores)
    overlaps the next edit. Frames (and a camera's audio) pass through a queue, in order; an error in
    the thread is raised in the caller's at its next put() or at close()."""

    def __init__(self, path, audio):
        self.path, self.audio, self.writer, self.error = path, audio, None, None
        self.queue = queue.Queue(maxsize=2 * FPS)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        if hasattr(os, "setpriority"):              # nice 19: it takes the cores only when the edit loop leaves
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)   # them idle (its encoder threads too)
        item = self.queue.get()
        while item is not None:                     # after an error, keep draining so put() never blocks
            kind, data = item
            if self.error is None:
                try:
                    if self.writer is None and kind == "frame":
                        self.writer = vid.VideoWriter(self.path, data.shape[1], data.shape[0], audio=self.audio,
                                                      preset=record_preset)
                        self.writer.__enter__()
                    if self.writer is not None:
                        self.writer.write(data) if kind == "frame" else self.writer.add_audio(data)
                except Exception as e:
                    self.error = e
            item = self.queue.get()

    def put(self, kind, data):
        if self.error is not None:
            raise self.error
        self.queue.put((kind, data))

    def close(self, keep=True):
        """Write what is queued; keep: finalise the file, else remove it (an error: nothing half-written)."""
        self.queue.put(None)
        self.thread.join()
        if self.writer is not None:
            ok = keep and self.error is None
            self.writer.__exit__(*((None, None, None) if ok else (RuntimeError, RuntimeError("stopped"), None)))
        if self.error is not None:
            raise self.error


def prefetch(items, size):
    """Iterate `items` in a thread of its own, up to `size` ahead: the next frames decode while the edit
    loop waits or runs single-threaded Python (a 576x768 h264 frame costs ~2-3 ms), and a video played
    backwards, decoded a chunk at a time, does not stall the loop. Errors come through."""
    ahead, end = queue.Queue(maxsize=size), object()

    def run():
        try:
            for item in items:
                ahead.put(item)
            ahead.put(end)
        except BaseException as e:                  # the consumer raises it
            ahead.put(e)
    threading.Thread(target=run, daemon=True).start()
    while (item := ahead.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item


def file_source(path, speech):
    """(frame, 640 audio samples) per tick: the video forwards-backwards over the speech's length."""
    info = vid.probe(path)
    n = max(1, round(len(speech) / SAMPLES_PER_FRAME))
    padded = np.pad(speech, (0, max(0, n * SAMPLES_PER_FRAME - len(speech))))   # round(): trim or pad
    for k, (i, frame) in enumerate(vid.ping_pong(path, info, n)):
        if k == n:
            return
        yield i, frame, padded[k * SAMPLES_PER_FRAME:(k + 1) * SAMPLES_PER_FRAME]


def capture_source(cam, microphone):
    """(frame, audio) per video frame from capture devices; audio is read in its own thread."""
    fmt_v, fmt_a = CAPTURE.get(sys.platform, ("v4l2", "alsa"))
    try:
        cv = av.open(cam, format=fmt_v, options={"framerate": str(FPS)})
    except (av.error.FFmpegError, OSError) as e:
        raise UserError(f"camera {cam!r} ({fmt_v}) cannot be opened: {e}; is it plugged in and free? "
                        f"(python stream.py --list-devices)") from None
    heard = queue.Queue()
    if microphone:
        try:
            ca = av.open(microphone, format=fmt_a)
        except (av.error.FFmpegError, OSError) as e:
            cv.close()
            raise UserError(f"microphone {microphone!r} ({fmt_a}) cannot be opened: {e}") from None
        to16k = av.AudioResampler(format="flt", layout="mono", rate=16000)

        def listen():
            for fr in ca.decode(audio=0):
                for out in to16k.resample(fr):
                    heard.put(out.to_ndarray().reshape(-1))
        threading.Thread(target=listen, daemon=True).start()
    pending = np.zeros(0, np.float32)
    for i, fr in enumerate(cv.decode(video=0)):
        while not heard.empty():
            pending = np.concatenate([pending, heard.get()])
        chunk = pending[:SAMPLES_PER_FRAME]
        pending = pending[len(chunk):]
        yield i, fr.to_ndarray(format="rgb24"), np.pad(chunk, (0, SAMPLES_PER_FRAME - len(chunk)))


def devices():
    fmt_v, fmt_a = CAPTURE.get(sys.platform, ("v4l2", "alsa"))
    if sys.platform == "linux":
        import glob
        cams = sorted(glob.glob("/dev/video*"))
        print("cameras (--camera):", ", ".join(cams) or "none found")
        print("microphones (--mic): default, or hw:CARD,DEV from `arecord -l`")
    else:
        print(f"list {fmt_v} devices with: ffmpeg -f {fmt_v} -list_devices true -i \"\"")


def warm_up(lips, shape):
    """One pose window and one edit of a blank (R, R, 3) crop before the clock starts: the fast path
    compiles on its first call (~30 s on a CPU), which would otherwise drop the first seconds."""
    lips.pose_windows(torch.zeros(0, 80), [0], steps, seed, lookahead, CONTEXT, group=pose_frames)
    lips.edit(np.zeros(shape, np.uint8)[None], torch.zeros(1, 12), recon=True)


def main():
    configure(globals())
    if list_devices:
        return devices()
    if not (video or camera):
        raise UserError("give a source: --video in.mp4 --audio speech.wav, or --camera DEVICE --mic DEVICE")
    if video and not audio:
        raise UserError("--video needs the speech to drive it: --audio speech.wav")
    if pose_frames < 1:
        raise UserError(f"--pose_frames={pose_frames}: give 1 or more")
    if record and not record.lower().endswith(".mp4"):
        raise UserError(f"--record {record}: give a name ending in .mp4")
    if record:
        check_output(record, {"input video": video, "driving audio": audio, "editor checkpoint": editor,
                              "pose checkpoint": pose}, "--record")
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if threads:
        torch.set_num_threads(threads)
    speech = load_audio(audio).numpy() if video else None
    info = vid.probe(video) if video else None
    lips = LipSync.load(editor, pose, dev, fast=fast, batch=pose_frames, guidance=guidance)
    source = prefetch(file_source(video, speech) if video else capture_source(camera, mic), FPS)
    height, width = (info.height, info.width) if video else (None, None)

    # the face box and the references (from the first 4 s of a file; from the first frames of a camera)
    where = None
    if video:
        where = face.Boxes(face.parse_box(box) if box else (0, 0, width, height), fixed=not box or info.frames == 1)
        face.check_box(where.first, width, height)
        refs = reference_crops(((f, where(k, f)) for k, f in zip(range(info.frames), vid.read_frames(video, 0, info))),
                               lips.resolution)
        lips.set_reference(refs)
    else:                                            # a camera: references from its first frame, in the loop
        lips.set_reference(np.zeros((4, lips.resolution, lips.resolution, 3), np.uint8))
    warm_up(lips, (lips.resolution, lips.resolution, 3))
    web = Web(host, port) if port else None
    if web:
        print(f"live page: http://{host}:{port}/", file=sys.stderr, flush=True)
    lag = lookahead + MEL_REACH + pose_frames        # frames between a frame's arrival and its edit
    shown, first = collections.deque(maxlen=lag + 1), None   # when the last lag + 1 frames were output, the first
    ready = {}                                       # frame index -> (edited, unedited) crops, made ahead
    mel, heard, heard_from = LogMelStream(), torch.zeros(0, 80), 0   # the recent log-mel, from video frame heard_from
    waiting = collections.deque()                    # (arrival time, index, frame, box) not yet edited
    rec = Recorder(record, speech if video else []) if record else None
    done = dropped = 0
    last = None
    t_start = time.perf_counter()
    recent = collections.deque(maxlen=25)
    spent = collections.defaultdict(list)            # seconds per frame in each stage, for the summary

    def emit(t, frame, box, arrived, edit):
        nonlocal last, done, dropped, heard, heard_from, first
        clock = [time.perf_counter()]
        tick = lambda stage: (clock.append(time.perf_counter()), spent[stage].append(clock[-1] - clock[-2]))
        if edit:
            for old in [f for f in ready if f < t]:  # edits of frames that were dropped
                del ready[old]
            if t not in ready:                       # this frame's and the next ones': their audio is heard and
                got = lips.pose_windows(heard, [t], steps, seed, lookahead, CONTEXT, heard_from, pose_frames)
                tick("pose")                         # they have arrived; one batch costs less than its frames
                group = [(t, frame, box)] + [(i, f, b) for _, i, f, b in itertools.islice(waiting, pose_frames - 1)]
                crops = np.stack([face.crop(f, b, lips.resolution) for _, f, b in group])
                edited, recon = lips.edit(crops, got[:len(group)], recon=True)
                ready.update((i, (e, r)) for (i, _, _), e, r in zip(group, edited.numpy(), recon.numpy()))
            else:
                tick("pose")
            edited, recon = ready.pop(t)
            tick("edit")
            last = face.paste(frame, edited, box, recon)
            tick("paste")
        else:
            dropped += 1
            last = last if last is not None else frame
        now = time.perf_counter()
        recent.append(now)
        shown.append(now)
        first = first or now
        if rec is not None:
            rec.put("frame", last)
        done += 1
        fps = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6) if len(recent) > 1 else 0.0
        stats = dict(fps=fps, latency_ms=1000 * (now - arrived), frames=done, dropped=dropped)
        if web:
            web.show(last, stats)
        tick("output")
        if done % FPS == 0:
            print(f"\r{done} frames, {fps:.1f} FPS, latency {stats['latency_ms']:.0f} ms, {dropped} dropped   ",
                  end="", file=sys.stderr, flush=True)

    def finish(keep):
        nonlocal rec
        if rec is not None:
            done_rec, rec = rec, None                                 # once, even if closing raises
            done_rec.close(keep)

    try:
        for k, (i, frame, chunk) in enumerate(source):
            if seconds and k >= seconds * FPS:
                break
            due = t_start + k / FPS
            if video and realtime:
                time.sleep(max(0.0, due - time.perf_counter()))      # the file plays at 25 fps
            if where is None:                                         # camera: the first frame gives the box
                height, width = frame.shape[:2]
                where = face.Boxes(face.parse_box(box) if box else (0, 0, width, height), fixed=not box)
                face.check_box(where.first, width, height)
                lips.set_reference(np.stack([face.crop(frame, where(0, frame), lips.resolution)] * 4))
            if rec is not None and not video:
                rec.put("audio", chunk)
            heard = torch.cat([heard, mel.push(chunk)])
            keep = max(0, (k - lag - CONTEXT - 1) - heard_from)               # frames no window needs any more
            heard, heard_from = heard[4 * keep:], heard_from + keep
            waiting.append((time.perf_counter(), k, frame, where(i, frame)))
            while len(waiting) > lag:
                arrived, t, f, b = waiting.popleft()
                late = realtime and time.perf_counter() - due > 2 / FPS    # more than 2 frames behind: drop
                emit(t, f, b, arrived, not late)
        heard = torch.cat([heard, mel.finish()])
        while waiting:                                                # the end of the file: the rest
            arrived, t, f, b = waiting.popleft()
            emit(t, f, b, arrived, True)
        finish(keep=True)
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
        finish(keep=True)                                             # keep what was recorded
    finally:
        finish(keep=False)                                            # an error: no half-written file
        if web:
            web.close()
    elapsed = time.perf_counter() - t_start
    # the output's pace while the input was live (the last `lag` frames come at once when a file ends)
    live, until = (done - lag, shown[0]) if done > lag + 1 else (done, shown[-1] if shown else first)
    pace = (live - 1) / max(until - first, 1e-6) if live > 1 else 0.0
    print(f"\n{done} frames in {elapsed:.1f} s, output at {pace:.1f} FPS, {dropped} dropped"
          + (f"; recorded {record}" if record else ""))
    if spent:                                        # means: a pose call serves pose_frames frames
        print("mean ms per frame: " + ", ".join(f"{k} {1000 * np.mean(v):.1f}" for k, v in spent.items())
              + f" (at {lips.resolution} px; a frame has {1000 / FPS:.0f} ms)")


if __name__ == "__main__":
    run_main(main)

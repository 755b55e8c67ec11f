import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "..", "shared", "media")


@pytest.fixture
def media():
    """The shared real media folder; tests using it skip when it is absent (users' clones)."""
    if not os.path.isdir(MEDIA):
        pytest.skip("../shared/media is not present")
    return MEDIA


def run_script(*args, cwd=None):
    """Run a top-level script (e.g. 'data.py') with the same Python; returns CompletedProcess."""
    script = os.path.join(ROOT, args[0])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, script, *args[1:]], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


TINY = ["--ae_channels=(8, 16)", "--editor_channels=(16, 16)", "--batch_size=4", "--log_every=1",
        "--eval_batches=1", "--threads=1"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 32 px SynthTalk set: 10 identities x 2 clips x 0.8 s."""
    root = tmp_path_factory.mktemp("tiny") / "synth"
    r = run_script("data.py", "synth", f"--out_dir={root}", "--identities=10", "--clips_per_identity=2",
                   "--seconds=0.8", "--resolution=32")
    assert r.returncode == 0, r.stderr
    return str(root)


@pytest.fixture(scope="session")
def tiny_ckpts(tiny_data, tmp_path_factory):
    """The whole FlashLips chain trained for a few steps by train.py: {stage: (checkpoint path, stdout)}."""
    out = tmp_path_factory.mktemp("ckpts")
    stages = [("ae", "", ["--max_steps=6", "--eval_every=3"]),
              ("editor", "ae", ["--max_steps=4", "--eval_every=4"]),
              ("refine", "editor", ["--max_steps=2", "--eval_every=2"]),
              ("pose", "editor", ["--max_steps=2", "--eval_every=2", "--seq_len=10", "--pose_dim=32",
                                  "--pose_layers=1"])]
    done = {}
    for model, init, extra in stages:
        init_from = [f"--init_from={done[init][0]}"] if init else []
        r = run_script("train.py", f"--model={model}", f"--data_dir={tiny_data}", f"--out_dir={out / model}",
                       *init_from, *extra, *TINY)
        assert r.returncode == 0, r.stderr
        done[model] = (str(out / model / "ckpt.pt"), r.stdout)
    return done


KEYSYNC_TINY = ["--keyframes=3", "--stride=2", "--ks_channels=(8, 16)"]


@pytest.fixture(scope="session")
def tiny_keysync(tiny_data, tiny_ckpts, tmp_path_factory):
    """KeySync's keyframe and interpolation models and the occlusion segmenter, a few train.py steps each,
    on the tiny FlashLips chain: {name: checkpoint path}."""
    out = tmp_path_factory.mktemp("keysync")
    runs = {"key": ["--model=keysync", f"--init_from={tiny_ckpts['pose'][0]}", "--ks_poses=True", *KEYSYNC_TINY],
            "interp": ["--model=keysync", "--interp=True", f"--init_from={tiny_ckpts['pose'][0]}", *KEYSYNC_TINY],
            "occluder": ["--model=occluder"]}
    done = {}
    for name, args in runs.items():
        r = run_script("train.py", *args, f"--data_dir={tiny_data}", f"--out_dir={out / name}", "--max_steps=2",
                       "--eval_every=2", *TINY)
        assert r.returncode == 0, r.stderr
        done[name] = str(out / name / "ckpt.pt")
    return done


@pytest.fixture(scope="session")
def tiny_keyface(tiny_data, tiny_ckpts, tmp_path_factory):
    """The audio-event encoder and KeyFace's keyframe and interpolation models, a few train.py steps each,
    on the tiny FlashLips chain: {name: checkpoint path}."""
    out = tmp_path_factory.mktemp("keyface")
    events = ["--model=events", "--seq_len=10"]
    r = run_script("train.py", *events, f"--data_dir={tiny_data}", f"--out_dir={out / 'events'}", "--max_steps=2",
                   "--eval_every=2", *TINY)
    assert r.returncode == 0, r.stderr
    done = {"events": str(out / "events" / "ckpt.pt")}
    common = ["--model=keyface", f"--init_from={tiny_ckpts['pose'][0]}", f"--events_from={done['events']}",
              *KEYSYNC_TINY]
    for name, args in (("key", common), ("interp", [*common, "--interp=True"])):
        r = run_script("train.py", *args, f"--data_dir={tiny_data}", f"--out_dir={out / name}", "--max_steps=2",
                       "--eval_every=2", *TINY)
        assert r.returncode == 0, r.stderr
        done[name] = str(out / name / "ckpt.pt")
    return done

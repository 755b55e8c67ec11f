import os

import pytest

from flashsync.config import configure
from flashsync.util import UserError


def scope():
    return dict(lr=1e-3, steps=10, name="run", compile=False, size=(64, 64), FPS=25)


def test_overrides_and_types(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("steps = 20\nname = 'from_file'\n")
    s = scope()
    rest = configure(s, [str(cfg), "--lr=0.01", "--steps", "30", "--compile", "video.mp4", "--size=(128, 128)"])
    assert rest == ["video.mp4"]
    assert s["lr"] == 0.01 and s["steps"] == 30 and s["name"] == "from_file" and s["compile"] is True
    assert s["size"] == (128, 128)
    configure(s, ["--lr=1"])          # an int where a float is expected is fine
    assert s["lr"] == 1.0 and isinstance(s["lr"], float)


@pytest.mark.parametrize("argv, message", [
    (["--lrr=0.1"], "unknown config key --lrr (did you mean --lr?)"),
    (["--steps=ten"], "--steps expects an integer"),
    (["--steps=1.5"], "--steps expects an integer"),
    (["--compile=maybe"], "--compile expects true or false"),
    (["--FPS=30"], "unknown config key --FPS"),
    (["--steps"], "--steps needs a value"),
])
def test_bad_keys_and_values(argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        configure(scope(), argv)


def test_config_file_unknown_key_and_type(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("stepz = 3\n")
    with pytest.raises(UserError, match="unknown config key --stepz"):
        configure(scope(), [str(bad)])
    bad.write_text("steps = 'many'\n")
    with pytest.raises(UserError, match="steps should be an integer"):
        configure(scope(), [str(bad)])
    with pytest.raises(UserError, match="cannot read config file"):
        configure(scope(), [str(tmp_path / "missing.py")])


def test_every_shipped_config_applies_to_its_script():
    import glob
    import importlib.util
    from conftest import ROOT

    def defaults(script):
        spec = importlib.util.spec_from_file_location(script[:-3] + "_defaults", os.path.join(ROOT, script))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)                      # scripts only run main() as __main__
        return {k: v for k, v in vars(mod).items() if not k.startswith("__")}

    scripts = {"train.py": defaults("train.py"), "data.py": defaults("data.py")}
    files = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))
    assert len(files) >= 9
    for path in files:
        script = "data.py" if os.path.basename(path).startswith("synth") else "train.py"
        scope = dict(scripts[script])
        assert configure(scope, [path]) == []             # unknown keys or wrong types would raise
        if script == "train.py":
            assert scope["model"] in ("ae", "editor", "refine", "pose", "syncnet", "keysync", "keyface", "occluder", "events") and scope["out_dir"].startswith("out/")


@pytest.mark.parametrize("command", [["train.py"], ["sample.py"], ["stream.py"], ["data.py"],
                                     ["-m", "flashsync.eval"], ["-m", "flashsync.bench"]])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_every_option(command, flag):
    """The first thing a newcomer types: the script's docstring and each setting with its default and comment."""
    import subprocess
    import sys
    from conftest import ROOT
    args = [os.path.join(ROOT, command[0])] if command[0].endswith(".py") else command
    r = subprocess.run([sys.executable, *args, flag], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "options (defaults below" in r.stdout and "error" not in r.stdout.lower()
    expect = {"train.py": ["--max_steps=2500", "--lr=0.002", "continue from out_dir/ckpt.pt", "  optimisation:"],
              "sample.py": ["--steps=6", "Euler steps of the pose sampler", "--out='out/sample.mp4'"],
              "stream.py": ["--lookahead=2", "frames of future audio the pose model waits for"],
              "data.py": ["--identities=200", "  synth:", "--split='train'"],
              "flashsync.eval": ["--speech=''", "noise floors mixed into the speech"],
              "flashsync.bench": ["--repeats=30"]}[command[-1]]
    for text in expect:
        assert text in r.stdout, (text, r.stdout)
    first = r.stdout.strip().splitlines()[0]
    assert len(first) > 10                                            # the docstring comes first

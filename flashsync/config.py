"""One configuration mechanism for every script (nanoGPT style).

A script lists typed defaults as module globals, then calls

    args = configure(globals())

which applies, in order, each `config/<name>.py` named on the command line
(plain Python executed into the script's globals) and each `--key=value` or
`--key value` override. Keys must already exist with a default; values are
converted to the default's type. Unknown keys and values of the wrong type are
user errors (one clear line). Other words on the command line (a subcommand,
input paths) are returned, in order, for the script to use.
"""
import ast
import difflib
import sys

from flashsync.util import UserError

_TYPES = (bool, int, float, str, tuple, list)
_NAMES = {int: "an integer", float: "a number", str: "a string", tuple: "a tuple", list: "a list"}


def _known(scope):
    # lower-case names only: constants like FPS and imported modules are not settings
    return {k: v for k, v in scope.items() if k == k.lower() and not k.startswith("_") and isinstance(v, _TYPES)}


def _convert(key, text, default):
    """Convert command-line text to the type of `default`, or raise a UserError."""
    kind = type(default)
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{key} expects true or false, got {text!r}")
    if kind is str:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise UserError(f"--{key} expects {_NAMES[kind]}, got {text!r}") from None
    if kind is float and type(value) is int:
        value = float(value)
    if kind in (tuple, list) and isinstance(value, (tuple, list)):
        value = kind(value)
    if type(value) is not kind:
        raise UserError(f"--{key} expects {_NAMES[kind]}, got {text!r}")
    return value


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return UserError(f"unknown config key --{key}{hint}")


def configure(scope, argv=None):
    """Apply config files and overrides to `scope` in place; return the other arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    defaults = _known(scope)
    rest = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            key, eq, text = arg[2:].partition("=")
            key = key.replace("-", "_")
            if key not in defaults:
                raise _unknown(key, defaults)
            if not eq:
                # `--flag` alone sets a bool; any other key takes the next word as its value
                if isinstance(defaults[key], bool) and (i >= len(argv) or argv[i].lower() not in ("true", "false", "1", "0")):
                    text = "true"
                elif i < len(argv):
                    text = argv[i]
                    i += 1
                else:
                    raise UserError(f"--{key} needs a value")
            scope[key] = _convert(key, text, defaults[key])
        elif arg.endswith(".py"):
            try:
                source = open(arg).read()
            except OSError as e:
                raise UserError(f"cannot read config file {arg}: {e.strerror}") from None
            cfg = {}
            exec(compile(source, arg, "exec"), {}, cfg)
            for key, value in _known(cfg).items():
                if key not in defaults:
                    raise _unknown(key, defaults)
                if isinstance(defaults[key], float) and type(value) is int:
                    value = float(value)
                if type(value) is not type(defaults[key]):
                    raise UserError(f"{arg}: {key} should be {_NAMES.get(type(defaults[key]), 'true or false')}, got {value!r}")
                scope[key] = value
        else:
            rest.append(arg)
    return rest


def config_of(scope):
    """The script's current configuration as a plain dict (for logs and checkpoints)."""
    return dict(_known(scope))

"""One configuration mechanism for every script (nanoGPT style).

A script lists typed defaults as module globals, then calls

    args = configure(globals())

which applies, in order, each `config/<name>.py` named on the command line
(plain Python executed into the script's globals) and each `--key=value` or
`--key value` override. `-h` or `--help` prints the script's docstring and every
setting with its default and the comment beside it in the script, then exits. Keys must already exist with a default; values are
converted to the default's type. Unknown keys and values of the wrong type are
user errors (one clear line). Other words on the command line (a subcommand,
input paths) are returned, in order, for the script to use.
"""
import ast
import difflib
import io
import sys
import tokenize

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


def usage(scope):
    """The script's docstring, then each setting (in the script's order) with its default and its comment."""
    defaults = _known(scope)
    lines = [(scope.get("__doc__") or "").strip(), "",
             "options (defaults below; override with config/<name>.py files and --key=value):"]
    try:
        source = open(scope["__file__"]).read()
    except (KeyError, OSError):
        source = ""
    # comments by line number: beside a setting it explains it, on an indented line below it
    # goes on explaining, at the start of the line above it names a group of settings
    comments = {t.start[0]: (t.start[1], t.string.lstrip("#").strip())
                for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    text = source.splitlines()
    seen = set()
    for node in ast.parse(source).body if source else []:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in defaults):
            continue
        key = node.targets[0].id
        heading = comments.get(node.lineno - 1)
        if heading and heading[0] == 0 and not heading[1].startswith(("---", "defaults")):
            lines.append(f"  {heading[1]}:")
        note = [comments[node.end_lineno][1]] if node.end_lineno in comments and comments[node.end_lineno][0] > 0 else []
        k = node.end_lineno + 1
        while k in comments and k <= len(text) and text[k - 1].lstrip().startswith("#") and comments[k][0] > 0:
            note.append(comments[k][1])                       # an indented comment line continues the note
            k += 1
        lines.append(f"    --{key}={defaults[key]!r}" + (f"    {' '.join(note)}" if note else ""))
        seen.add(key)
    lines += [f"    --{key}={value!r}" for key, value in defaults.items() if key not in seen]
    return "\n".join(lines)


def configure(scope, argv=None):
    """Apply config files and overrides to `scope` in place; return the other arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    defaults = _known(scope)
    if "-h" in argv or "--help" in argv:
        print(usage(scope))
        sys.exit(0)
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

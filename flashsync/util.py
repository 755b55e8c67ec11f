"""Small things every script needs: user errors, atomic outputs, the main wrapper."""
import contextlib
import os
import shutil
import sys
import tempfile


class UserError(Exception):
    """A problem with the user's input. Scripts print its one line and exit 2: no traceback."""


def native_bf16(device):
    """Whether bf16 runs natively on `device` ("cpu", "cuda", "cuda:1"): CUDA GPUs, and CPUs with
    AVX512-BF16 or AMX, where autocast to bf16 is faster; elsewhere it is emulated and slower."""
    import torch
    return str(device).startswith("cuda") or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def warn(message):
    """One line on stderr for something the user should know but that does not stop the run."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def run_main(main):
    """Call main(); user errors become one line on stderr and exit code 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories. A failure (or Ctrl-C) removes the temporary,
    so a half-written output never exists under the final name.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp" + suffix, dir=parent)
    os.close(fd)
    os.remove(tmp)  # callers create a file or a directory there themselves
    try:
        yield tmp
        if os.path.isdir(path) and os.path.isdir(tmp):
            shutil.rmtree(path)  # replacing a directory: os.replace cannot swap non-empty dirs
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def check_file(path, what="file"):
    """Raise a UserError unless `path` is a readable regular file."""
    if not path:
        raise UserError(f"no {what} given")
    if not os.path.exists(path):
        raise UserError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise UserError(f"{what} is not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} is not readable (permissions): {path}")
    if os.path.getsize(path) == 0:
        raise UserError(f"{what} is empty (0 bytes): {path}")


def check_output(path, inputs, option="--out"):
    """Refuse to write `path` when it is one of the `inputs` ({what: path}): the same file, also
    through a symbolic or hard link. An output must never overwrite what it is made from."""
    if not os.path.exists(path):
        return                                   # a new file cannot be an existing input
    for what, src in inputs.items():
        if src and os.path.exists(src) and os.path.samefile(src, path):
            raise UserError(f"{option} {path} is the {what} ({src}): writing it would destroy the input; "
                            f"give another output name")

"""Atomic writes of directories (bundles, checkpoints) and single files (stdlib only).

A process killed at any instant (SIGKILL, power loss after fsync) leaves either the previous version or the new
one at the target path, never a mixture, and never a half-written directory under a name a loader would open:

* :func:`staged_dir` builds in a hidden sibling ``.<name>.partial-<pid>-<random>``, fsyncs every file, then swaps it
  into place (``renameat2(RENAME_EXCHANGE)`` on Linux, so an existing target never disappears). The caller writes
  its "this is complete" marker (a bundle's ``manifest.json``, a checkpoint's ``meta.json``) last, inside the
  stage, so even the stage itself is never complete-looking before everything else is on disk. Leftover stages
  of dead processes are removed by the next write to the same target.
* :func:`write_file` does the same for one file (temp file, fsync, ``os.replace``, fsync of the directory).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from edgelmm.errors import OutputExistsError

_RENAME_EXCHANGE = 2  # linux/fs.h
PARTIAL = ".partial-"


@contextlib.contextmanager
def staged_dir(out: Path, *, force: bool) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``out`` to fill; publish it at ``out`` when the block ends without error.

    An existing ``out`` is refused unless ``force`` (then replaced atomically). On any exception, KeyboardInterrupt
    included, the stage is deleted and ``out`` is untouched.
    """
    out = Path(out)
    check_target(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(out)
    stage = out.with_name(f".{out.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")
    stage.mkdir()
    try:
        yield stage
        sync_tree(stage)
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def check_target(out: Path, *, force: bool) -> None:
    """Refuse an existing output before any work starts (unless ``force``)."""
    if out.exists() and not force:
        raise OutputExistsError(f"output directory '{out}' exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path '{out}' exists and is not a directory")


def write_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write_durably(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_durably(path: Path, data: bytes) -> None:
    """Write and fsync one file (use inside a stage, e.g. for the completion marker)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sync_tree(root: Path) -> None:
    """fsync every regular file under ``root`` and every directory, so the swap publishes data already on disk."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            _fsync(path)
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        _fsync_dir(directory)


def remove_stale_stages(out: Path) -> None:
    """Delete leftovers of killed writers of ``out`` (their process is gone)."""
    for path in out.parent.glob(f".{out.name}{PARTIAL}*"):
        try:
            pid = int(path.name.rsplit(PARTIAL, 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems (and Windows) cannot fsync a directory; the rename is still atomic
        pass


def _publish(stage: Path, out: Path) -> None:
    """Move ``stage`` to ``out``. An existing ``out`` is exchanged atomically (renameat2) where the OS allows."""
    if not out.exists():
        os.rename(stage, out)
    elif _exchange(stage, out):
        shutil.rmtree(stage, ignore_errors=True)  # the stage now holds the old version
    else:  # no atomic exchange: a short window where out is absent; the old version survives as .old-*
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

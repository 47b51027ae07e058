"""Atomic bundle writes: build in a hidden sibling directory, write the manifest last, then swap into place.

An export killed at any point leaves the previous bundle (if any) intact at its path, and a half-written directory
is never mistaken for a bundle: it has a ``.partial-`` name and no manifest until the last step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgelmm.errors import OutputExistsError
from edgelmm.runtime.manifest import MANIFEST_NAME, FileEntry, Manifest, check_invariants, sha256_file

_RENAME_EXCHANGE = 2  # linux/fs.h


def check_output(out: Path, *, force: bool) -> None:
    """Refuse an existing output before any work starts (unless ``force``)."""
    if out.exists() and not force:
        raise OutputExistsError(f"output directory '{out}' exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path '{out}' exists and is not a directory")


def write_bundle(out: Path, populate: Callable[[Path], Manifest], *, force: bool) -> Manifest:
    """Run ``populate(tmp_dir)`` (writes the graphs, returns the manifest without files), then publish atomically."""
    out = Path(out)
    check_output(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        draft = populate(tmp)
        manifest = dataclasses.replace(draft, files=list_files(tmp))
        check_invariants(manifest, where=str(tmp / MANIFEST_NAME))
        _write_durably(tmp / MANIFEST_NAME, manifest.to_json().encode())
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def list_files(root: Path) -> dict[str, FileEntry]:
    """sha256 and size of every regular file under ``root`` except the manifest, by relative POSIX path."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_NAME:
            _fsync(path)
            files[path.relative_to(root).as_posix()] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    return files


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``. An existing ``out`` is exchanged atomically (renameat2) where the OS allows."""
    if not out.exists():
        os.rename(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old bundle
    else:  # no atomic exchange: a short window where out is absent; the old bundle survives as .old-*
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _remove_stale_partials(out: Path) -> None:
    """Delete leftovers of killed exports to ``out`` (their process is gone)."""
    for path in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(path.name.rsplit(".partial-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_graph(proto: Any, path: Path) -> None:
    """Write onnx.ModelProto ``proto`` to ``path``, every weight in one external-data file beside it (graphs over
    2 GB stay loadable; onnxruntime maps the weights instead of copying them)."""
    import onnx  # here: check_output must stay importable before the [export] extra is checked

    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)

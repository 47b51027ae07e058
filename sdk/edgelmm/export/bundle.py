"""Atomic bundle writes: build in a hidden sibling directory, write the manifest last, then swap into place.

An export killed at any point leaves the previous bundle (if any) intact at its path, and a half-written directory
is never mistaken for a bundle: it has a ``.partial-`` name and no manifest until the last step (edgelmm.atomic).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgelmm.atomic import check_target, staged_dir, write_durably
from edgelmm.runtime.bundle_files import sha256_file
from edgelmm.runtime.manifest import MANIFEST_NAME, FileEntry, Manifest
from edgelmm.runtime.manifest_rules import check_invariants

check_output = check_target
"""Refuse an existing output before any work starts (unless ``force``)."""


def write_bundle(out: Path, populate: Callable[[Path], Manifest], *, force: bool) -> Manifest:
    """Run ``populate(tmp_dir)`` (writes the graphs, returns the manifest without files), then publish atomically."""
    with staged_dir(Path(out), force=force) as tmp:
        draft = populate(tmp)
        manifest = dataclasses.replace(draft, files=list_files(tmp))
        check_invariants(manifest, where=str(tmp / MANIFEST_NAME))
        write_durably(tmp / MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def stage_manifest(tmp: Path, draft: Manifest) -> None:
    """Write ``draft`` with its file listing into the staged directory, so the runtime can load the bundle before
    it is published (calibration, accuracy re-check); write_bundle replaces it with the final manifest."""
    write_durably(tmp / MANIFEST_NAME, dataclasses.replace(draft, files=list_files(tmp)).to_json().encode())


def list_files(root: Path) -> dict[str, FileEntry]:
    """sha256 and size of every regular file under ``root`` except the manifest, by relative POSIX path."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_NAME:
            files[path.relative_to(root).as_posix()] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    return files


def save_graph(proto: Any, path: Path) -> None:
    """Write onnx.ModelProto ``proto`` to ``path``, every weight in one external-data file beside it (graphs over
    2 GB stay loadable; onnxruntime maps the weights instead of copying them)."""
    import onnx  # here: check_output must stay importable before the [export] extra is checked

    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)

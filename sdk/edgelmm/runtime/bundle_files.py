"""Bundle files as untrusted input: plain relative paths only, sizes and sha256 as the manifest lists them, graph I/O
read from each file by a streaming protobuf walk. Everything raises BundleIntegrityError on the first failure.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgelmm.errors import BundleIntegrityError
from edgelmm.runtime.onnx_proto import check_graph_file

if TYPE_CHECKING:
    from edgelmm.runtime.manifest import Manifest


def safe_path(root: Path, name: str) -> Path:
    """Resolve ``name`` inside ``root``; refuse absolute paths, ``..``, odd characters and symlinks on the way."""
    if (not isinstance(name, str) or not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name
            or not name.isprintable() or len(name) > 1024):
        raise BundleIntegrityError(f"bundle file name '{name}' is not a plain relative path")
    parts = name.split("/")
    if any(p in ("..", ".", "") for p in parts):
        raise BundleIntegrityError(f"bundle file name '{name}' points outside the bundle (or has empty parts)")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise BundleIntegrityError(f"bundle file name '{name}' has a component longer than 255 bytes")
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise BundleIntegrityError(f"bundle file '{name}' is a symbolic link; bundles hold plain files only")
    return path


def sha256_file(path: Path, *, chunk: int = 4 * 2**20) -> str:
    with open(path, "rb") as f:
        return _sha256(f, chunk)


def _sha256(f: Any, chunk: int = 4 * 2**20) -> str:
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def verify_files(root: Path, manifest: Manifest, *, check_hashes: bool = True) -> None:
    """Every listed file exists inside the bundle with the recorded size (and sha256); first failure raises.

    Each file is opened once, without following a symlink and without blocking on a FIFO, and checked through that
    descriptor, so what is measured and hashed is what was opened.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    for name, entry in manifest.files.items():
        path = safe_path(root, name)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise BundleIntegrityError(f"bundle file '{name}' is missing from '{root}'") from None
        except OSError as exc:  # ELOOP (a symlink swapped in), ENOTDIR, EACCES...
            raise BundleIntegrityError(f"bundle file '{name}' cannot be opened ({exc.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise BundleIntegrityError(f"bundle file '{name}' is not a regular file")
        with os.fdopen(fd, "rb") as f:
            if st.st_size != entry.bytes:
                raise BundleIntegrityError(
                    f"bundle file '{name}' is {st.st_size} bytes, manifest says {entry.bytes} (truncated or replaced)"
                )
            if check_hashes and (digest := _sha256(f)) != entry.sha256:
                raise BundleIntegrityError(f"bundle file '{name}' sha256 {digest[:16]}... != manifest"
                                           f" {entry.sha256[:16]}... (tampered or corrupt)")


def verify_graphs(root: Path, manifest: Manifest) -> None:
    """Each graph file's inputs/outputs equal the manifest's, and its external data reads only its listed files."""
    for graph in manifest.graphs.values():
        external = {name: manifest.files[name].bytes for name in graph.external_data}
        check_graph_file(safe_path(root, graph.file), graph.file, graph, external)

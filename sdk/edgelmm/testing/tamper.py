"""TAMPERS: hostile edits of a real bundle, each of which Pipeline.load must refuse, naming the file, before any
onnxruntime session exists.

    python -m edgelmm.testing.tamper --bundle bundles/tiny-random      # table + JSON line (needs edgelmm[export])

Most cases are "consistent" tampering: after editing a file the attacker also fixes its sha256 and size in the
manifest, so the hash check passes and the deeper check (graph I/O, external-data paths, tokenizer, template) must
catch it. ``tests/testing/test_tamper.py`` runs every case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgelmm.errors import BundleError, EdgelmmError
from edgelmm.runtime.bundle_files import sha256_file
from edgelmm.runtime.manifest import MANIFEST_NAME, read_manifest


@dataclasses.dataclass(frozen=True, slots=True)
class Tamper:
    name: str
    apply: Callable[[Path], None]
    """Edits the bundle copy in place."""
    expect: str
    """Regex the one-line refusal must match; it names the offending file or field."""
    vision_only: bool = False


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rehash(bundle: Path, *names: str) -> None:
    """The attacker's fix-up: record the edited files' real sha256 and size in the manifest."""

    def edit(data: dict[str, Any]) -> None:
        for name in names:
            data["files"][name] = {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}

    edit_manifest(bundle, edit)


def rewrite_graph(bundle: Path, file: str, edit: Callable[[Any], None]) -> None:
    """Edit an ONNX graph's protobuf (weights stay external and untouched), then rehash it."""
    import onnx

    model = onnx.load(str(bundle / file), load_external_data=False)
    edit(model)
    (bundle / file).write_bytes(model.SerializeToString())
    rehash(bundle, file)


def _external(location: str, offset: int = 0, length: int = 16) -> Any:
    from onnx import TensorProto

    tensor = TensorProto(name="smuggled", data_type=TensorProto.FLOAT, dims=[length // 4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _add_initializer(location: str, **kw: int) -> Callable[[Any], None]:
    return lambda model: model.graph.initializer.append(_external(location, **kw))


def _add_constant(location: str) -> Callable[[Any], None]:
    from onnx import helper

    return lambda model: model.graph.node.append(
        helper.make_node("Constant", [], ["smuggled"], value=_external(location))
    )


def _rename_input(model: Any) -> None:
    model.graph.input[0].name = "renamed_ids"
    for node in model.graph.node:
        node.input[:] = ["renamed_ids" if n == "input_ids" else n for n in node.input]


def _set(path: Sequence[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _outside(bundle: Path, name: str = "outside.bin", data: bytes = b"\0" * 4096) -> Path:
    path = bundle.parent / name
    path.write_bytes(data)
    return path


def _symlink_tokenizer(bundle: Path) -> None:
    target = _outside(bundle, "outside-tokenizer.json", (bundle / "tokenizer.json").read_bytes())
    (bundle / "tokenizer.json").unlink()
    (bundle / "tokenizer.json").symlink_to(target)


def _symlinked_directory(bundle: Path) -> None:
    outside = bundle.parent / "outside-dir"
    outside.mkdir(exist_ok=True)
    shutil.copy(bundle / "decoder.onnx.data", outside / "decoder.onnx.data")
    (bundle / "sub").symlink_to(outside)
    edit_manifest(bundle, lambda d: d["files"].update({"sub/decoder.onnx.data": d["files"]["decoder.onnx.data"]}))


def _fifo_data(bundle: Path) -> None:
    (bundle / "decoder.onnx.data").unlink()
    os.mkfifo(bundle / "decoder.onnx.data")


def _flip(file: str, offset: int = 0) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        data = bytearray((bundle / file).read_bytes())
        data[offset] ^= 0x01
        (bundle / file).write_bytes(bytes(data))

    return apply


def _truncate(file: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / file).write_bytes((bundle / file).read_bytes()[:100])


def _append(file: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / file).write_bytes((bundle / file).read_bytes() + b"\0")


def _then_rehash(apply: Callable[[Path], None], *files: str) -> Callable[[Path], None]:
    def both(bundle: Path) -> None:
        apply(bundle)
        rehash(bundle, *files)

    return both


def _corrupt_tokenizer(bundle: Path) -> None:
    (bundle / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 5}}')


def _swap_image_token(bundle: Path) -> None:
    edit_manifest(bundle, lambda d: d["text"].update(image_token="<|im_start|>"))


def _second_graph_field(bundle: Path) -> None:
    """Protobuf merges a repeated singular field: a second `graph` would add inputs a first-match parser misses."""
    import onnx

    model = onnx.load(str(bundle / "token_embedding.onnx"), load_external_data=False)
    extra = onnx.ModelProto()
    extra.graph.initializer.append(_external("../outside.bin"))
    (bundle / "token_embedding.onnx").write_bytes(model.SerializeToString() + extra.SerializeToString())
    rehash(bundle, "token_embedding.onnx")


def _unlisted_external(bundle: Path) -> None:
    """A file inside the bundle but not in the manifest: onnxruntime 1.32 reads it; its bytes are unverified."""
    (bundle / "unlisted.bin").write_bytes(b"\0" * 64)
    rewrite_graph(bundle, "decoder.onnx", _add_initializer("unlisted.bin"))


def _manifest_text(text: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / MANIFEST_NAME).write_text(text)


def _duplicate_key(bundle: Path) -> None:
    raw = (bundle / MANIFEST_NAME).read_text()
    (bundle / MANIFEST_NAME).write_text(
        raw.replace('"schema_version": 1,', '"schema_version": 1, "schema_version": 1,', 1)
    )


def _manifest_symlink(bundle: Path) -> None:
    target = _outside(bundle, "outside-manifest.json", (bundle / MANIFEST_NAME).read_bytes())
    (bundle / MANIFEST_NAME).unlink()
    (bundle / MANIFEST_NAME).symlink_to(target)


def _graph_file_outside(bundle: Path) -> None:
    shutil.copy(bundle / "decoder.onnx", bundle.parent / "evil.onnx")

    def edit(d: dict[str, Any]) -> None:
        d["graphs"]["decoder"]["file"] = "../evil.onnx"
        d["files"]["../evil.onnx"] = d["files"]["decoder.onnx"]

    edit_manifest(bundle, edit)


TAMPERS: dict[str, Tamper] = {
    t.name: t
    for t in (
        # paths named by the manifest
        Tamper("graph-file-parent-dir", _graph_file_outside, r"'\.\./evil\.onnx' points outside the bundle"),
        Tamper(
            "files-absolute-path",
            lambda b: edit_manifest(b, _set(["files", "/etc/passwd"], {"sha256": "0" * 64, "bytes": 1})),
            r"'/etc/passwd' is not a plain relative path",
        ),
        Tamper(
            "files-dotdot-inside",
            lambda b: edit_manifest(b, _set(["files", "a/../../b"], {"sha256": "0" * 64, "bytes": 1})),
            r"'a/\.\./\.\./b' points outside",
        ),
        Tamper(
            "files-nul-byte",
            lambda b: edit_manifest(b, _set(["files", "x\u0000.onnx"], {"sha256": "0" * 64, "bytes": 1})),
            r"not a plain relative path",
        ),
        Tamper("tokenizer-symlink", _symlink_tokenizer, r"'tokenizer\.json' is a symbolic link"),
        Tamper("symlinked-directory", _symlinked_directory, r"'sub/decoder\.onnx\.data' is a symbolic link"),
        Tamper("data-file-is-fifo", _fifo_data, r"'decoder\.onnx\.data' is not a regular file"),
        Tamper("manifest-symlink", _manifest_symlink, r"manifest\.json' is not a regular file"),
        # integrity
        Tamper("sha256-mismatch", _flip("decoder.onnx.data", 7), r"'decoder\.onnx\.data' sha256 .* \(tampered"),
        Tamper(
            "size-truncated", _truncate("token_embedding.onnx"), r"'token_embedding\.onnx' is 100 bytes, manifest says"
        ),
        Tamper("size-appended", _append("decoder.onnx"), r"'decoder\.onnx' is \d+ bytes, manifest says"),
        Tamper("missing-graph", lambda b: (b / "decoder.onnx").unlink(), r"'decoder\.onnx' is missing"),
        Tamper("missing-tokenizer", lambda b: (b / "tokenizer.json").unlink(), r"'tokenizer\.json' is missing"),
        Tamper(
            "tokenizer-not-listed",
            lambda b: edit_manifest(b, lambda d: d["files"].pop("tokenizer.json")),
            r"tokenizer file 'tokenizer\.json' is not listed in files",
        ),
        # external data inside the graphs (consistent: hashes fixed up)
        Tamper(
            "external-parent-dir",
            lambda b: rewrite_graph(b, "decoder.onnx", _add_initializer("../outside.bin")),
            r"graph 'decoder\.onnx' tensor 'smuggled' reads external data from '\.\./outside\.bin'",
        ),
        Tamper(
            "external-absolute",
            lambda b: rewrite_graph(b, "decoder.onnx", _add_initializer("/etc/hostname")),
            r"graph 'decoder\.onnx' .* from '/etc/hostname'",
        ),
        Tamper(
            "external-unlisted-file",
            _unlisted_external,
            r"graph 'decoder\.onnx' .* from 'unlisted\.bin', which is not one of the graph's external_data",
        ),
        Tamper(
            "external-in-constant-node",
            lambda b: rewrite_graph(b, "token_embedding.onnx", _add_constant("../outside.bin")),
            r"graph 'token_embedding\.onnx' tensor 'smuggled' reads external data from '\.\./outside\.bin'",
        ),
        Tamper(
            "external-past-end",
            lambda b: rewrite_graph(b, "decoder.onnx", _add_initializer("decoder.onnx.data", offset=10**9)),
            r"graph 'decoder\.onnx' tensor 'smuggled' reads bytes 1000000000\.\.",
        ),
        Tamper(
            "second-graph-field",
            _second_graph_field,
            r"graph 'token_embedding\.onnx' is not a valid ONNX model: .*2 graph",
        ),
        Tamper(
            "graph-not-protobuf",
            _then_rehash(lambda b: (b / "decoder.onnx").write_bytes(b"\xff" * 64), "decoder.onnx"),
            r"graph 'decoder\.onnx' is not a valid ONNX model",
        ),
        # graph I/O against the manifest (consistent)
        Tamper(
            "graph-input-renamed",
            lambda b: rewrite_graph(b, "token_embedding.onnx", _rename_input),
            r"graph 'token_embedding\.onnx' inputs do not match the manifest",
        ),
        Tamper(
            "graph-input-dtype",
            lambda b: rewrite_graph(
                b, "token_embedding.onnx", lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 6)
            ),
            r"graph 'token_embedding\.onnx' input 'input_ids' is int32 in the graph, int64 in the manifest",
        ),
        Tamper(
            "graph-output-rank",
            lambda b: rewrite_graph(b, "decoder.onnx", lambda m: m.graph.output[0].type.tensor_type.shape.dim.pop()),
            r"graph 'decoder\.onnx' output 'logits' has shape .* in the graph",
        ),
        Tamper(
            "manifest-kv-heads",
            lambda b: edit_manifest(b, _set(["kv_cache", "num_kv_heads"], 3)),
            r"decoder input 'past_key_values\.0\.key' shape .* is not \[batch, 3, past",
        ),
        Tamper(
            "manifest-io-name",
            lambda b: edit_manifest(b, _set(["kv_cache", "past_key"], "past.{layer}.k")),
            r"graph 'decoder' I/O is not what the runtime feeds",
        ),
        # manifest parsing
        Tamper("manifest-duplicate-key", _duplicate_key, r"duplicate key 'schema_version'"),
        Tamper(
            "manifest-nan",
            lambda b: (b / MANIFEST_NAME).write_text(
                (b / MANIFEST_NAME).read_text().replace('"temperature": 0.0', '"temperature": NaN')
            ),
            r"NaN is not a JSON number",
        ),
        Tamper(
            "manifest-schema", lambda b: edit_manifest(b, _set(["schema_version"], 99)), r"unknown schema_version 99"
        ),
        Tamper("manifest-deep-nesting", _manifest_text("[" * 100_000), r"nested too deeply"),
        Tamper(
            "kv-format-string",
            lambda b: edit_manifest(b, _set(["kv_cache", "past_key"], "{layer:>999999999}")),
            r"kv_cache\.past_key .* must contain '\{layer\}' once",
        ),
        Tamper(
            "kv-num-layers-huge",
            lambda b: edit_manifest(b, _set(["kv_cache", "num_layers"], 10**12)),
            r"kv_cache\.num_layers must be in \[1, 1024\]",
        ),
        Tamper(
            "image-size-huge",
            lambda b: edit_manifest(b, _set(["preprocess", "image_size"], [100000, 100000])),
            r"image_size and shortest_edge must be in \[1, 8192\]",
            vision_only=True,
        ),
        Tamper(
            "image-tokens-huge",
            lambda b: edit_manifest(b, _set(["text", "num_image_tokens"], 10**9)),
            r"num_image_tokens must be in \[0, max_context\)",
        ),
        # tokenizer and chat template (content the runtime interprets)
        Tamper(
            "tokenizer-corrupt",
            _then_rehash(_corrupt_tokenizer, "tokenizer.json"),
            r"tokenizer file '.*tokenizer\.json' cannot be loaded",
        ),
        Tamper(
            "tokenizer-image-id",
            _swap_image_token,
            r"tokenizer file 'tokenizer\.json' does not match the manifest: image_token",
            vision_only=True,
        ),
        Tamper(
            "template-syntax",
            lambda b: edit_manifest(b, _set(["text", "chat_template"], "{% for %}")),
            r"chat template \(manifest text\.chat_template\) does not compile",
        ),
        Tamper(
            "template-hang",
            lambda b: edit_manifest(
                b,
                _set(
                    ["text", "chat_template"],
                    "{% for a in range(9999) %}{% for b in range(9999) %}{% for c in range(9999) %}"
                    "{% endfor %}{% endfor %}{% endfor %}",
                ),
            ),
            r"chat template \(manifest text\.chat_template\) did not finish rendering within",
        ),
        Tamper(
            "template-memory",
            lambda b: edit_manifest(b, _set(["text", "chat_template"], "{{ 'a' * 10000000000 }}")),
            r"chat template \(manifest text\.chat_template\) failed: SecurityError: repetition",
        ),
        Tamper(
            "template-escape",
            lambda b: edit_manifest(
                b, _set(["text", "chat_template"], "{{ ''.__class__.__mro__[1].__subclasses__() }}")
            ),
            r"chat template \(manifest text\.chat_template\) failed: SecurityError: access to attribute",
        ),
    )
}


def run_tamper(tamper: Tamper, bundle: Path, scratch: Path) -> str:
    """Apply ``tamper`` to a copy of ``bundle`` and load it; return the refusal message (raise if it loaded)."""
    from unittest import mock

    from edgelmm.runtime import Pipeline

    copy = scratch / tamper.name / "bundle"
    shutil.rmtree(copy.parent, ignore_errors=True)
    copy.parent.mkdir(parents=True)
    shutil.copytree(bundle, copy)
    tamper.apply(copy)
    with mock.patch("edgelmm.runtime.sessions.ort.InferenceSession", side_effect=_SessionCreated):
        try:
            Pipeline.load(copy)
        except EdgelmmError as exc:
            return str(exc)
        except _SessionCreated:
            pass
    raise AssertionError(f"tampered bundle '{tamper.name}' passed verification: a session was being created")


class _SessionCreated(BaseException):  # not an Exception: no handler on the way can turn it into a refusal
    pass


def main(argv: Sequence[str] | None = None) -> int:
    import re

    p = argparse.ArgumentParser(prog="python -m edgelmm.testing.tamper", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="a bundle (a text-only one skips the vision cases)")
    args = p.parse_args(argv)
    vision = read_manifest(args.bundle).has_vision
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgelmm-tamper-") as scratch:
        for tamper in (t for t in TAMPERS.values() if vision or not t.vision_only):
            try:
                message = run_tamper(tamper, args.bundle, Path(scratch))
                ok = bool(re.search(tamper.expect, message)) and "\n" not in message
            except (AssertionError, BundleError) as exc:
                message, ok = f"NOT REFUSED: {exc}", False
            rows.append({"case": tamper.name, "refused": ok, "message": message[:150]})
    print("| case | refused before any session | message |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {'yes' if r['refused'] else 'NO'} | {r['message']} |")
    summary = {"tamper_cases": len(rows), "refused": sum(r["refused"] for r in rows)}
    print(json.dumps({**summary, "cases": rows}))
    return 0 if summary["refused"] == summary["tamper_cases"] else 1


if __name__ == "__main__":
    sys.exit(main())

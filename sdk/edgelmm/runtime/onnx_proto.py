"""Just enough of the ONNX protobuf format to vet a graph file before onnxruntime opens it (the runtime has no onnx).

A bundle is untrusted. Before any session exists the runtime needs two facts from each ``.onnx`` file: its graph
inputs/outputs (names, element types, shapes), to compare with the manifest, and every external-data ``location``
its tensors point at, because onnxruntime resolves those paths itself and would read whatever file they name.
Tensors live in initializers, sparse initializers, node attributes, subgraphs (If/Loop/Scan bodies), functions and
training-info graphs: all are walked.

The file is memory-mapped and walked field by field; weight payloads (``raw_data`` and the typed ``*_data``
fields) are skipped by their length prefix, never read, so vetting a 600 MB graph touches a few MB of it.

Wire format (https://protobuf.dev/programming-guides/encoding/): each field is ``varint(number << 3 | wire_type)``
then a varint (type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5). Field numbers are
those of onnx/onnx.proto (ONNX IR version 10).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgelmm.errors import BundleIntegrityError

MAX_NESTING = 32
"""Subgraph depth limit (If inside Loop inside ...): real models nest a few levels; hostile ones would recurse."""

DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "str",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
}
"""TensorProto.DataType -> the numpy-style name the exporter writes into the manifest (onnx.helper's mapping)."""

# Field numbers (onnx.proto).
MODEL_GRAPH, MODEL_FUNCTIONS, MODEL_TRAINING_INFO = 7, 25, 20
TRAINING_GRAPHS = (1, 2)  # TrainingInfoProto.initialization, .algorithm
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 1, 5, 15, 11, 12
NODE_ATTRIBUTE = 5
FUNCTION_NODE = 7
ATTR_T, ATTR_G, ATTR_SPARSE, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSES = 5, 6, 22, 10, 11, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_NAME, TENSOR_EXTERNAL, TENSOR_LOCATION = 8, 13, 14
VALUE_NAME, VALUE_TYPE = 1, 2
TYPE_TENSOR, TENSOR_ELEM, TENSOR_SHAPE, SHAPE_DIM, DIM_VALUE, DIM_PARAM = 1, 1, 2, 1, 1, 2


class _Malformed(Exception):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ValueInfo:
    """A graph input or output as the manifest records it: unknown dims are 0, as the exporter writes them."""

    name: str
    dtype: str | None
    shape: tuple[int | str, ...] | None


@dataclasses.dataclass(frozen=True, slots=True)
class ExternalRef:
    """One tensor stored outside the .onnx file."""

    tensor: str
    location: str | None
    offset: int
    length: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class GraphFile:
    """What :func:`read_graph_file` found."""

    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    initializers: frozenset[str]
    external: tuple[ExternalRef, ...]


class _Message:
    """A length-delimited region of the buffer, iterated field by field."""

    __slots__ = ("buf", "start", "end")

    def __init__(self, buf: Any, start: int, end: int) -> None:
        self.buf, self.start, self.end = buf, start, end

    def _varint(self, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= self.end or shift > 63:
                raise _Malformed(f"bad varint at byte {pos}")
            byte = self.buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    def fields(self) -> Iterator[tuple[int, int, Any]]:
        """(field number, wire type, value): an int for varints, a _Message for length-delimited fields."""
        pos = self.start
        while pos < self.end:
            key, pos = self._varint(pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Malformed(f"field number 0 at byte {pos}")
            if wire == 0:
                value, pos = self._varint(pos)
            elif wire == 1 or wire == 5:
                value, pos = None, pos + (8 if wire == 1 else 4)
            elif wire == 2:
                length, pos = self._varint(pos)
                value, pos = _Message(self.buf, pos, pos + length), pos + length
            else:
                raise _Malformed(f"unsupported wire type {wire} at byte {pos}")
            if pos > self.end:
                raise _Malformed(f"field {number} runs past the end of its message at byte {self.end}")
            yield number, wire, value

    def text(self) -> str:
        try:
            return bytes(self.buf[self.start : self.end]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"a name at byte {self.start} is not UTF-8") from None

    def sub(self, wanted: int) -> Iterator[_Message]:
        """Every occurrence of length-delimited field ``wanted`` (a repeated message field)."""
        for number, wire, value in self.fields():
            if number == wanted and wire == 2:
                yield value

    def singular(self, *numbers: int) -> dict[int, Any]:
        """The singular fields ``numbers`` by number. Protobuf parsers merge a repeated occurrence of a singular
        field into the first, so a second copy could smuggle in what we did not vet: a duplicate is refused
        (serializers never write one)."""
        out: dict[int, Any] = {}
        for number, _wire, value in self.fields():
            if number not in numbers:
                continue
            if number in out:
                raise _Malformed(f"singular field {number} appears twice in the message at byte {self.start}")
            out[number] = value
        return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


class _Walker:
    def __init__(self) -> None:
        self.external: list[ExternalRef] = []

    def model(self, msg: _Message) -> GraphFile:
        graphs = list(msg.sub(MODEL_GRAPH))
        if len(graphs) != 1:
            raise _Malformed(f"the model has {len(graphs)} graph fields, expected 1")
        graph = graphs[0]
        inputs, outputs, initializers = self.graph(graph, 0)
        for function in msg.sub(MODEL_FUNCTIONS):
            self.nodes(function.sub(FUNCTION_NODE), 0)
        for info in msg.sub(MODEL_TRAINING_INFO):
            for number in TRAINING_GRAPHS:
                for g in info.sub(number):
                    self.graph(g, 1)
        return GraphFile(tuple(inputs), tuple(outputs), frozenset(initializers), tuple(self.external))

    def graph(self, msg: _Message, depth: int) -> tuple[list[ValueInfo], list[ValueInfo], list[str]]:
        if depth > MAX_NESTING:
            raise _Malformed(f"subgraphs nested deeper than {MAX_NESTING}")
        inputs, outputs, initializers = [], [], []
        for number, wire, value in msg.fields():
            if wire != 2:
                continue
            if number == GRAPH_INITIALIZER:
                initializers.append(self.tensor(value))
            elif number == GRAPH_SPARSE_INITIALIZER:
                self.sparse(value)
            elif number == GRAPH_NODE:
                self.nodes(iter([value]), depth)
            elif number == GRAPH_INPUT:
                inputs.append(_value_info(value))
            elif number == GRAPH_OUTPUT:
                outputs.append(_value_info(value))
        return inputs, outputs, initializers

    def nodes(self, nodes: Iterator[_Message], depth: int) -> None:
        for node in nodes:
            for attr in node.sub(NODE_ATTRIBUTE):
                for number, wire, value in attr.fields():
                    if wire != 2:
                        continue
                    if number in (ATTR_T, ATTR_TENSORS):
                        self.tensor(value)
                    elif number in (ATTR_SPARSE, ATTR_SPARSES):
                        self.sparse(value)
                    elif number in (ATTR_G, ATTR_GRAPHS):
                        self.graph(value, depth + 1)

    def sparse(self, msg: _Message) -> None:
        for number in (SPARSE_VALUES, SPARSE_INDICES):
            for tensor in msg.sub(number):
                self.tensor(tensor)

    def tensor(self, msg: _Message) -> str:
        """Record the tensor's external data, if any; return its name. Payload fields are skipped unread."""
        name, entries, location_flag, seen = "", {}, 0, set()
        for number, wire, value in msg.fields():
            if number in (TENSOR_NAME, TENSOR_LOCATION):
                if number in seen:
                    raise _Malformed(f"tensor field {number} appears twice at byte {msg.start}")
                seen.add(number)
            if number == TENSOR_NAME and wire == 2:
                name = value.text()
            elif number == TENSOR_EXTERNAL and wire == 2:
                entry = {n: v.text() if isinstance(v, _Message) else "" for n, v in value.singular(1, 2).items()}
                key, val = entry.get(1, ""), entry.get(2, "")
                if key in entries:
                    raise _Malformed(f"tensor '{name}' has two external_data '{key}' entries")
                entries[key] = val
            elif number == TENSOR_LOCATION and wire == 0:
                location_flag = value
        if location_flag == 1 or entries:  # EXTERNAL, or entries onnxruntime might still honour: vet them too
            self.external.append(
                ExternalRef(
                    name,
                    entries.get("location"),
                    _int(entries.get("offset", "0")),
                    _int(entries["length"]) if "length" in entries else None,
                )
            )
        return name


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _Malformed(f"external data offset/length {text!r:.30} is not an integer") from None
    if value < 0:
        raise _Malformed(f"external data offset/length {value} is negative")
    return value


def _value_info(msg: _Message) -> ValueInfo:
    fields = msg.singular(VALUE_NAME, VALUE_TYPE)
    name = fields[VALUE_NAME].text() if isinstance(fields.get(VALUE_NAME), _Message) else ""
    dtype = shape = None
    type_proto = fields.get(VALUE_TYPE)
    if isinstance(type_proto, _Message):
        tensor_type = type_proto.singular(TYPE_TENSOR).get(TYPE_TENSOR)
        if isinstance(tensor_type, _Message):
            tensor = tensor_type.singular(TENSOR_ELEM, TENSOR_SHAPE)
            if isinstance(tensor.get(TENSOR_ELEM), int):
                dtype = DTYPES.get(tensor[TENSOR_ELEM], f"onnx-type-{tensor[TENSOR_ELEM]}")
            if isinstance(tensor.get(TENSOR_SHAPE), _Message):
                shape = tuple(_dim(d) for d in tensor[TENSOR_SHAPE].sub(SHAPE_DIM))
    return ValueInfo(name, dtype, shape)


def _dim(msg: _Message) -> int | str:
    """A Dimension as the exporter records it: dim_param if set, else dim_value (0 when unknown)."""
    fields = msg.singular(DIM_VALUE, DIM_PARAM)
    param = fields.get(DIM_PARAM)
    if isinstance(param, _Message) and (text := param.text()):
        return text
    value = fields.get(DIM_VALUE)
    return _signed(value) if isinstance(value, int) else 0


def read_graph_file(path: Path, label: str) -> GraphFile:
    """Walk ``path`` (memory-mapped, weights unread); malformed files raise BundleIntegrityError naming ``label``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise BundleIntegrityError(f"graph '{label}' cannot be opened ({exc.strerror})") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise BundleIntegrityError(f"graph '{label}' is empty")
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as buf:
            return _Walker().model(_Message(buf, 0, size))
    except _Malformed as exc:
        raise BundleIntegrityError(f"graph '{label}' is not a valid ONNX model: {exc}") from None
    except RecursionError:
        raise BundleIntegrityError(f"graph '{label}' is not a valid ONNX model: nested too deeply") from None
    finally:
        os.close(fd)


def check_graph_file(path: Path, label: str, spec: Any, external_files: Mapping[str, int]) -> GraphFile:
    """Refuse a graph whose I/O differs from ``spec`` (a manifest GraphSpec) or whose external data points anywhere
    but ``external_files`` (name -> size: the graph's external_data entries, already verified as bundle files)."""
    graph = read_graph_file(path, label)
    for ref in graph.external:
        if ref.location is None:
            raise BundleIntegrityError(f"graph '{label}' tensor '{ref.tensor}' is external but names no location")
        if ref.location not in external_files:
            allowed = ", ".join(external_files) or "none"
            raise BundleIntegrityError(
                f"graph '{label}' tensor '{ref.tensor}' reads external data from '{ref.location}', which is not one"
                f" of the graph's external_data files in the manifest ({allowed})"
            )
        size = external_files[ref.location]
        end = ref.offset + (ref.length or 0)
        if end > size:
            raise BundleIntegrityError(
                f"graph '{label}' tensor '{ref.tensor}' reads bytes {ref.offset}..{end} of '{ref.location}',"
                f" which has {size}"
            )
    inputs = tuple(v for v in graph.inputs if v.name not in graph.initializers)  # IR < 4 lists weights as inputs
    for kind, found, expected in (("input", inputs, spec.inputs), ("output", graph.outputs, spec.outputs)):
        _compare(label, kind, found, expected)
    return graph


def _compare(label: str, kind: str, found: tuple[ValueInfo, ...], expected: Any) -> None:
    have = {v.name: v for v in found}
    want = {t.name: t for t in expected}
    if have.keys() != want.keys():
        extra, missing = sorted(have.keys() - want.keys()), sorted(want.keys() - have.keys())
        raise BundleIntegrityError(
            f"graph '{label}' {kind}s do not match the manifest: graph has {extra or 'no'}"
            f" extra and lacks {missing or 'none'}"
        )
    for name, t in want.items():
        v = have[name]
        if v.dtype != t.dtype:
            raise BundleIntegrityError(
                f"graph '{label}' {kind} '{name}' is {v.dtype} in the graph, {t.dtype} in the manifest"
            )
        if v.shape is None or tuple(v.shape) != tuple(t.shape):
            raise BundleIntegrityError(
                f"graph '{label}' {kind} '{name}' has shape {list(v.shape) if v.shape is not None else 'unknown'} in"
                f" the graph, {list(t.shape)} in the manifest"
            )

"""The runtime's streaming protobuf walk agrees with onnx on real graphs and refuses malformed or smuggling files."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgelmm.errors import BundleIntegrityError
from edgelmm.runtime.manifest import read_manifest
from edgelmm.runtime.onnx_proto import DTYPES, check_graph_file, read_graph_file


def _expected(model):
    def info(v):
        t = v.type.tensor_type
        return v.name, DTYPES[t.elem_type], tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)

    external = sorted(
        (t.name, e.value) for t in model.graph.initializer for e in t.external_data if e.key == "location"
    )
    return [info(v) for v in model.graph.input], [info(v) for v in model.graph.output], external


@pytest.mark.parametrize("bundle_name", ["tiny_bundle", "tiny_lm_bundle"])
def test_walk_matches_onnx_on_every_real_graph(request, bundle_name):
    bundle = request.getfixturevalue(bundle_name)
    for graph in read_manifest(bundle).graphs.values():
        model = onnx.load(str(bundle / graph.file), load_external_data=False)
        found = read_graph_file(bundle / graph.file, graph.file)
        inputs, outputs, external = _expected(model)
        assert [(v.name, v.dtype, v.shape) for v in found.inputs] == inputs
        assert [(v.name, v.dtype, v.shape) for v in found.outputs] == outputs
        assert sorted((r.tensor, r.location) for r in found.external) == external
        assert found.initializers == {t.name for t in model.graph.initializer}


def _model(initializers=(), nodes=None, **kw):
    io = (
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    nodes = nodes or [helper.make_node("Identity", ["x"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", *io, list(initializers)), **kw)


def _external(name, location, offset=0, length=16):
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[length // 4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def test_external_data_is_found_in_subgraphs_and_sparse_tensors(tmp_path):
    inner = helper.make_graph(
        [helper.make_node("Identity", ["w2"], ["z"])],
        "body",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
        [_external("w2", "deep.bin")],
    )
    cond = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)
    sparse = helper.make_sparse_tensor(
        _external("sv", "sparse.bin", length=8), helper.make_tensor("si", TensorProto.INT64, [2], [0, 1]), [4]
    )
    model = _model(nodes=[cond])
    model.graph.sparse_initializer.append(sparse)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    found = read_graph_file(path, "m.onnx")
    assert sorted((r.tensor, r.location) for r in found.external) == [
        ("sv", "sparse.bin"),
        ("w2", "deep.bin"),
        ("w2", "deep.bin"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\xff" * 20, "bad varint"),
        (b"\x3a\xff\x01", "runs past the end"),  # graph field claiming 255 bytes
        (b"\x0b\x00", "unsupported wire type 3"),  # a protobuf group
        (b"\x08\x07", "has 0 graph fields"),  # ir_version only
    ],
)
def test_malformed_files_are_refused_naming_the_file(tmp_path, data, message):
    path = tmp_path / "decoder.onnx"
    path.write_bytes(data)
    with pytest.raises(BundleIntegrityError, match=f"graph 'decoder.onnx' .*{message}"):
        read_graph_file(path, "decoder.onnx")


def test_duplicate_singular_fields_and_deep_nesting_are_refused(tmp_path):
    path = tmp_path / "m.onnx"
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]).SerializeToString()
    graph = b"\x5a" + bytes([len(value) * 2]) + value + value  # input whose ValueInfo repeats name and type
    path.write_bytes(b"\x3a" + bytes([len(graph)]) + graph)
    with pytest.raises(BundleIntegrityError, match="singular field 1 appears twice"):
        read_graph_file(path, "m.onnx")

    def field(number, payload):  # a length-delimited protobuf field
        size, length = b"", len(payload)
        while True:
            size += bytes([length & 0x7F | (0x80 if length > 0x7F else 0)])
            length >>= 7
            if not length:
                break
        return bytes([number << 3 | 2]) + size + payload

    graph = b""
    for _ in range(40):  # graph.node -> node.attribute -> attribute.g -> graph ... (Loop bodies in Loop bodies)
        graph = field(1, field(5, field(6, graph)))
    path.write_bytes(field(7, graph))
    with pytest.raises(BundleIntegrityError, match="nested deeper than 32"):
        read_graph_file(path, "m.onnx")


def test_weights_are_not_read(tmp_path, monkeypatch):
    """A 64 MB inline initializer: the walk maps the file and skips the payload by its length prefix."""
    big = helper.make_tensor("w", TensorProto.FLOAT, [16 * 2**20], np.zeros(16 * 2**20, np.float32).tobytes(), raw=True)
    path = tmp_path / "big.onnx"
    path.write_bytes(_model([big]).SerializeToString())
    touched = []
    import edgelmm.runtime.onnx_proto as proto

    original = proto._Message.text
    monkeypatch.setattr(proto._Message, "text", lambda self: touched.append(self.end - self.start) or original(self))
    found = read_graph_file(path, "big.onnx")
    assert found.initializers == {"w"} and max(touched) < 100  # only names were decoded


def test_io_mismatch_names_the_file(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    graph = manifest.graphs["token_embedding"]
    check_graph_file(tiny_bundle / graph.file, graph.file, graph, {})
    with pytest.raises(BundleIntegrityError, match="graph 'token_embedding.onnx' output 'inputs_embeds' has shape"):
        check_graph_file(
            tiny_bundle / graph.file,
            graph.file,
            graph.__class__(
                file=graph.file,
                precision=graph.precision,
                opset=graph.opset,
                inputs=graph.inputs,
                outputs=(graph.outputs[0].__class__(name="inputs_embeds", dtype="float32", shape=("batch_size", 7)),),
            ),
            {},
        )


def test_onnxruntime_refuses_escaping_paths_itself_but_reads_unlisted_files(tmp_path):
    """What onnxruntime 1.32 does on its own (docs/reliability.md): '../', absolute paths and symlinks out of the
    model directory are refused; any other file in the directory is read, unverified. Hence our check."""
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "unlisted.bin").write_bytes(np.full(4, 7, dtype=np.float32).tobytes())
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    for location, loads in (("../secret.bin", False), (str(tmp_path / "secret.bin"), False), ("unlisted.bin", True)):
        path = tmp_path / "b" / "m.onnx"
        path.write_bytes(
            _model([_external("w", location)], nodes, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
        )
        if loads:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            assert session.run(None, {"x": np.zeros(4, np.float32)})[0].tolist() == [7, 7, 7, 7]
        else:
            with pytest.raises(Exception, match="External data path"):
                ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        graph_spec = type("Spec", (), {"inputs": (), "outputs": ()})()
        with pytest.raises(BundleIntegrityError, match=f"reads external data from '{location}'"):
            check_graph_file(path, "m.onnx", graph_spec, {})

"""Export a LoadedModel to a bundle: role graphs, tokenizer, validation, manifest, atomic publish."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch

from edgelmm import __version__
from edgelmm.errors import ExportError, SpecError
from edgelmm.export import validate
from edgelmm.export.bundle import check_output, write_bundle
from edgelmm.export.graphs import (
    Decoder,
    TokenEmbedding,
    export_role,
    kv_spec,
    trace_inputs_decoder,
    trace_inputs_embedding,
    trace_inputs_vision,
    vision_encoder,
)
from edgelmm.export.io_spec import decoder_io, embedding_io, vision_io
from edgelmm.models import families
from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.manifest import (
    BUNDLE_FORMAT,
    SCHEMA_VERSION,
    GraphSpec,
    Manifest,
    ModelInfo,
    TensorSpec,
    TextSpec,
)
from edgelmm.specs import GenerationSpec, GraphRole, Precision

DEFAULT_OPSET = 18  # dynamo's floor; opset 23 would emit Attention/RotaryEmbedding ops mobile runtimes lack
TOKENIZER_FILE = "tokenizer.json"
SUPPORTED_PRECISIONS = (Precision.FP32,)

Log = Callable[[str], object]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExportOptions:
    precision: Precision = Precision.FP32
    max_context: int | None = None
    """Cap on prompt + generated tokens recorded in the manifest (default: the model's max positions)."""
    opset: int = DEFAULT_OPSET
    max_new_tokens: int = 128
    """Default generation length recorded in the manifest."""


def export_model(loaded: LoadedModel, out: Path, options: ExportOptions = ExportOptions(), *, force: bool = False,
                 log: Log = lambda _: None) -> Manifest:
    """Export ``loaded`` to the bundle directory ``out`` and return its manifest."""
    if options.precision not in SUPPORTED_PRECISIONS:
        valid = ", ".join(str(p) for p in SUPPORTED_PRECISIONS)
        raise SpecError(f"precision '{options.precision}' cannot be exported yet; valid: {valid}")
    if options.max_context is not None and not (2 <= options.max_context <= loaded.max_context):
        raise SpecError(f"max_context must be in [2, {loaded.max_context}] for this model, got {options.max_context}")
    family = families.get(loaded.family_name)
    text_type = loaded.text_config.model_type
    vision_type = getattr(getattr(loaded.config, "vision_config", None), "model_type", "")
    families.check_model_types(family, vision_type, text_type)
    installed = _version("transformers") or "?"
    families.check_transformers(family, installed)
    check_output(out, force=force)
    started = time.perf_counter()

    def populate(tmp: Path) -> Manifest:
        return _populate(loaded, tmp, options, log, started)

    try:
        return write_bundle(out, populate, force=force)
    except ExportError as exc:
        if type(exc) is not ExportError:  # tolerance/shape failures are about numbers, not versions
            raise
        raise ExportError(f"{exc} (edgelmm verified {family.title} with transformers {family.transformers};"
                          f" installed: {installed})") from exc


def _populate(loaded: LoadedModel, tmp: Path, options: ExportOptions, log: Log, started: float) -> Manifest:
    model = loaded.model.float().eval()
    text_config = loaded.text_config
    hidden, vocab = int(text_config.hidden_size), int(model.get_input_embeddings().num_embeddings)
    kv = kv_spec(model)
    tol = validate.TOLERANCES[options.precision]
    graphs: dict[GraphRole, GraphSpec] = {}
    cases: list[validate.Case] = []

    if loaded.has_vision:
        log("exporting vision_encoder (tower + connector)...")
        module, path = vision_encoder(loaded), tmp / "vision_encoder.onnx"
        io_spec, size = vision_io(dynamic_batch=module.batch_size is None), loaded.preprocess.image_size
        export_role(module, trace_inputs_vision(size, module.batch_size), io_spec, path, opset=options.opset,
                    external_data=False)
        cases += validate.validate_vision(path, module, size, tol[GraphRole.VISION_ENCODER],
                                          loaded.preprocess.value_range)
        graphs[GraphRole.VISION_ENCODER] = _graph_spec(path, tmp, options)

    log("exporting token_embedding...")
    embedding, io_spec, path = TokenEmbedding(model), embedding_io(), tmp / "token_embedding.onnx"
    export_role(embedding, trace_inputs_embedding(vocab), io_spec, path, opset=options.opset, external_data=False)
    cases += validate.validate_embedding(path, embedding, vocab, tol[GraphRole.TOKEN_EMBEDDING])
    graphs[GraphRole.TOKEN_EMBEDDING] = _graph_spec(path, tmp, options)

    log(f"exporting decoder ({kv.num_layers} layers)...")
    rows = loaded.positions.rows
    decoder, io_spec, path = Decoder(model, kv.num_layers), decoder_io(kv, position_rows=rows), tmp / "decoder.onnx"
    export_role(decoder, trace_inputs_decoder(hidden, kv, rows), io_spec, path, opset=options.opset,
                external_data=True)
    with torch.no_grad():
        cases += validate.validate_decoder(path, decoder, embedding, kv, vocab, tol[GraphRole.DECODER],
                                           io_spec.input_names, rows)
    graphs[GraphRole.DECODER] = _graph_spec(path, tmp, options)
    validate.check(cases)

    loaded.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
    tokenizer = loaded.tokenizer
    max_context = options.max_context or loaded.max_context
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        format=BUNDLE_FORMAT,
        edgelmm_version=__version__,
        model=ModelInfo(
            name=loaded.name,
            kind=loaded.kind,
            architecture=type(model).__name__,
            model_type=str(getattr(model.config, "model_type", "")),
            hidden_size=hidden,
            vocab_size=vocab,
            num_layers=kv.num_layers,
        ),
        graphs=graphs,
        files={},  # filled by write_bundle once every file is final
        kv_cache=kv,
        preprocess=loaded.preprocess,
        text=TextSpec(
            tokenizer_file=TOKENIZER_FILE,
            chat_template=loaded.chat_template,
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            bos_token_id=tokenizer.bos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_ids=loaded.eos_token_ids,
            max_context=max_context,
            image_token=loaded.image_token,
            image_token_id=loaded.image_token_id,
            num_image_tokens=loaded.num_image_tokens,
            image_prompt=loaded.image_prompt,
        ),
        positions=loaded.positions,
        generation=GenerationSpec(max_new_tokens=min(options.max_new_tokens, max_context - 1)),
        invariants={
            "decoder.inputs_embeds[-1] == model.hidden_size": hidden,
            "vision_encoder.image_features[1] == text.num_image_tokens": loaded.num_image_tokens,
        },
        validation={
            "tolerances": {str(role): {"atol": a, "rtol": r} for role, (a, r) in tol.items() if role in graphs},
            "cases": [c.to_dict() for c in cases],
            "passed": all(c.passed for c in cases),
        },
        provenance=_provenance(loaded, options, started),
    )
    log(f"validated {len(cases)} cases against torch; writing manifest")
    return manifest


def _graph_spec(path: Path, root: Path, options: ExportOptions) -> GraphSpec:
    """Read the exported graph's real I/O (names, dtypes, symbolic shapes) and its external-data files."""
    proto = onnx.load(str(path), load_external_data=False)
    external = sorted({
        entry.value
        for init in proto.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    })
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=options.opset)
    return GraphSpec(
        file=path.relative_to(root).as_posix(),
        precision=options.precision,
        opset=int(opset),
        inputs=tuple(_tensor_spec(v) for v in proto.graph.input),
        outputs=tuple(_tensor_spec(v) for v in proto.graph.output),
        external_data=tuple(external),
    )


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in tensor_type.shape.dim)
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the edgelmm checkout this code runs from, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _provenance(loaded: LoadedModel, options: ExportOptions, started: float) -> dict[str, Any]:
    return {
        "model": loaded.name,
        "export_options": {k: str(v) if v is not None else None for k, v in dataclasses.asdict(options).items()},
        "versions": {p: _version(p) for p in ("edgelmm", "torch", "transformers", "onnx", "onnxscript", "onnxruntime")},
        "git_commit": git_commit(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - started, 1),
    }

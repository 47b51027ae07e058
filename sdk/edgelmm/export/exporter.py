"""Export a LoadedModel to a bundle: role graphs, tokenizer, validation, manifest, atomic publish."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch

from edgelmm import __version__
from edgelmm.errors import ExportError, SpecError
from edgelmm.export import validate
from edgelmm.export.bundle import check_output, save_graph, stage_manifest, write_bundle
from edgelmm.export.decoders import DECODER_GRAPHS, LORA_FORMS, build_decoder, select_builder, side_path_problem
from edgelmm.export import lora_graph
from edgelmm.export import accuracy as acc
from edgelmm.export.qdq import Sample, calibration_feeds, quantize_static_qdq
from edgelmm.export.quantize import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_METHOD,
    GraphPrecisions,
    QuantSpec,
    quantize_decoder,
    quantize_embedding,
    quantize_vision,
)
from edgelmm.export.visual_tokens import VisualBudget, apply_budget, check_budget
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
from edgelmm.export.io_spec import decoder_io, embedding_io, static_decoder_io, vision_io
from edgelmm.export.llama_graph import unsupported_reason as llama_unsupported
from edgelmm.export.static_decoder import StaticLlamaStep
from edgelmm.export.static_decoder import trace_inputs as static_trace_inputs
from edgelmm.models import families
from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.manifest import (
    BUNDLE_FORMAT,
    SCHEMA_VERSION,
    GraphSpec,
    KVCacheSpec,
    Manifest,
    ModelInfo,
    TensorSpec,
    TextSpec,
    VisualTokenSpec,
)
from edgelmm.specs import GenerationSpec, GraphRole, Precision, to_dict

DEFAULT_OPSET = 18  # dynamo's floor; opset 23 would emit Attention/RotaryEmbedding ops mobile runtimes lack
TOKENIZER_FILE = "tokenizer.json"
SUPPORTED_PRECISIONS = (Precision.FP32, Precision.INT8, Precision.INT4, Precision.W8)
"""``--precision`` (one precision for the text graphs; the token embedding follows int4, vision stays fp32).
Per-graph precisions, static QDQ included, come through ``ExportOptions.graphs`` (export recipes)."""

Log = Callable[[str], object]
AUTO_METHOD = "auto"
TaskCheck = Callable[[Path], dict[str, Any]]
"""Scores a staged bundle directory on an eval task through the runtime (edgelmm.evals.export_checks)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExportOptions:
    precision: Precision = Precision.FP32
    max_context: int | None = None
    """Cap on prompt + generated tokens recorded in the manifest (default: the model's max positions)."""
    opset: int = DEFAULT_OPSET
    max_new_tokens: int = 128
    """Default generation length recorded in the manifest."""
    decoder_graph: str = "auto"
    """auto | fast | generic (export.decoders.DECODER_GRAPHS): the hand-built fast graph or torch.onnx."""
    block_size: int = DEFAULT_BLOCK_SIZE
    """int4 / w8 only: weights per quantization block."""
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL
    """int4 / w8 only: MatMulNBits compute type (4 = int8 activations, 0 = fp32)."""
    quant_method: str = AUTO_METHOD
    """int4 only: rtn | minmax | minmax-float | hqq (see QuantSpec.method), or auto: minmax for a registry LM's own
    weights (a LoRA side path's base included), rtn for a fine-tuned one with merged deltas (``resolved``)."""
    graphs: GraphPrecisions | None = None
    """One QuantSpec per graph (export recipes); replaces precision / block_size / accuracy_level / quant_method."""
    budget: VisualBudget = VisualBudget()
    """Visual-token budget of the vision graph (smaller image size, pooling)."""
    static_shapes: bool = False
    """NPU form: the vision graph takes exactly one image (batch 1, the fixed image size)."""
    recipe: str = ""
    """The export recipe these options came from (provenance)."""
    check_tokens: int = 256
    """Tokens of the fixed text the finished bundle's decoder is teacher-forced over (agreement with fp32 torch);
    0 skips the check."""
    lora: str = "auto"
    """auto | merged | side-path (export.decoders.LORA_FORMS): how the LM's unmerged LoRA (LoadedModel.lora) is
    exported; auto gives int4 / w8 decoders the float side path (``resolved``)."""

    def __post_init__(self) -> None:
        if self.decoder_graph not in DECODER_GRAPHS:
            raise SpecError(f"decoder graph '{self.decoder_graph}' is not valid; valid: {', '.join(DECODER_GRAPHS)}")
        if self.lora not in LORA_FORMS:
            raise SpecError(f"lora '{self.lora}' is not valid; valid: {', '.join(LORA_FORMS)}")

    def resolved(self, loaded: LoadedModel) -> ExportOptions:
        """``lora`` and ``quant_method`` auto -> real choices. Measured on the trained smol-vqa (docs/training.md):
        merged LoRA deltas are far below one int4 step, so minmax (matched to SmolLM2's Q4_1 grid) rounds them back
        onto it (shapes 3.5% vs fp32 46%) and rtn keeps part of them (42%). With the LoRA as a float side path the
        quantized weights are the base LM's own, where minmax agrees best with fp32 (0.93 vs 0.73 top-1 on SmolLM2,
        docs/performance.md): int4 and w8 decoders get it by default."""
        if self._side_path(loaded):
            method = DEFAULT_METHOD if self.quant_method == AUTO_METHOD else self.quant_method
            return dataclasses.replace(self, lora="side-path", quant_method=method)
        options = dataclasses.replace(self, lora="merged")
        decoder = options.graphs.decoder if options.graphs is not None else None
        minmax = decoder is not None and decoder.precision is Precision.INT4 and decoder.method == "minmax"
        if minmax and loaded.lm_trained:
            # A preset's min-max (arm64-int4) exists for the Q4_1 grid of SmolLM2's own weights only.
            graphs = dataclasses.replace(options.graphs, decoder=dataclasses.replace(decoder, method="rtn"))
            return dataclasses.replace(options, graphs=graphs)
        if options.quant_method != AUTO_METHOD:
            return options
        return dataclasses.replace(options, quant_method="rtn" if loaded.lm_trained else DEFAULT_METHOD)

    def _side_path(self, loaded: LoadedModel) -> bool:
        """Whether the decoder carries the LoRA as a side path; ``lora: side-path`` that cannot be raises."""
        precision = self.graphs.decoder.precision if self.graphs is not None else self.precision
        if self.lora == "merged" or (self.lora == "auto" and precision not in (Precision.INT4, Precision.W8)):
            return False
        problem = side_path_problem(loaded, self.decoder_graph, static_shapes=self.static_shapes,
                                    static_qdq=precision in (Precision.A8W8, Precision.A16W8))
        if problem and self.lora == "side-path":
            raise SpecError(f"LoRA cannot be exported as a side path: {problem}")
        return problem is None

    def quant_spec(self, role: GraphRole) -> QuantSpec:
        """The quantization of one graph: ``graphs``' when given, else ``precision`` for the text graphs."""
        if self.graphs is not None:
            return self.graphs.for_role(role)
        if role is GraphRole.VISION_ENCODER:
            return QuantSpec()
        return QuantSpec(precision=self.precision, block_size=self.block_size, accuracy_level=self.accuracy_level,
                         method=self.quant_method if self.precision is Precision.INT4 else "rtn")


def export_model(loaded: LoadedModel, out: Path, options: ExportOptions = ExportOptions(), *, force: bool = False,
                 log: Log = lambda _: None, calibration: Sequence[Sample] = (),
                 task_check: TaskCheck | None = None,
                 extra: Callable[[Path, Manifest, Log], Manifest] | None = None) -> Manifest:
    """Export ``loaded`` to the bundle directory ``out`` and return its manifest.

    ``calibration``: (image, prompt) samples for static QDQ graphs; ``task_check``: scores the staged bundle on an
    eval task (its result lands in the manifest's accuracy section); ``extra(tmp_dir, manifest, log) -> manifest``:
    adds more files and graphs to the bundle before it is checked and published (the Item-Language Model's item
    encoder and CF table: export/item_lm.py); write_bundle lists and hashes them.
    """
    options = options.resolved(loaded)
    if options.graphs is None and options.precision not in SUPPORTED_PRECISIONS:
        valid = ", ".join(str(p) for p in SUPPORTED_PRECISIONS)
        raise SpecError(f"precision '{options.precision}' cannot be exported yet; valid: {valid}")
    static = [r for r in GraphRole if options.quant_spec(r).static]
    if static and not calibration:
        raise SpecError(f"{', '.join(static)} {'is' if len(static) == 1 else 'are'} static QDQ and need calibration"
                        " samples (a recipe's calibration: dataset, split, samples)")
    if static and loaded.positions.rows != 1:
        raise SpecError(f"static QDQ supports linear positions only, not {loaded.positions.scheme}")
    if options.budget.active:
        check_budget(loaded, options.budget)  # an unreachable budget fails before any work
    if options.static_shapes and llama_unsupported(loaded.model):
        raise SpecError(f"static shapes need a Llama-architecture text decoder: {llama_unsupported(loaded.model)}")
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
        manifest, revalidate = _populate(loaded, tmp, options, log, started)
        if extra is not None:
            manifest = extra(tmp, manifest, log)
        feeds: dict[GraphRole, list] = {}
        if static:
            manifest, feeds = _quantize_static(manifest, tmp, options, calibration, revalidate, log)
        manifest = _recheck(loaded, manifest, tmp, options, task_check, log)
        if options.static_shapes and feeds:
            log("placement check: static graphs on the QNN HTP simulator, CPU fallback disabled...")
            providers = acc.provider_checks(tmp, manifest, {r: f[:1] for r, f in feeds.items()})
            manifest = dataclasses.replace(manifest, accuracy={**manifest.accuracy, "providers": providers})
        return manifest

    try:
        return write_bundle(out, populate, force=force)
    except ExportError as exc:
        if type(exc) is not ExportError:  # tolerance/shape failures are about numbers, not versions
            raise
        raise ExportError(f"{exc} (edgelmm verified {family.title} with transformers {family.transformers};"
                          f" installed: {installed})") from exc


Revalidate = dict[GraphRole, Callable[[Path, tuple[float, float]], list[validate.Case]]]
"""Per graph: re-run its parity cases on a rewritten file at a tolerance (after static QDQ)."""


def _populate(loaded: LoadedModel, tmp: Path, options: ExportOptions, log: Log, started: float
              ) -> tuple[Manifest, Revalidate]:
    model = loaded.model.float().eval()
    text_config = loaded.text_config
    hidden, vocab = int(text_config.hidden_size), int(model.get_input_embeddings().num_embeddings)
    tol = validate.TOLERANCES[Precision.FP32]
    graphs: dict[GraphRole, GraphSpec] = {}
    cases: list[validate.Case] = []
    revalidate: Revalidate = {}
    budget: VisualTokenSpec | None = None

    if loaded.has_vision:
        log("exporting vision_encoder (tower + connector)...")
        if options.budget.active:
            loaded, module, budget = apply_budget(loaded, options.budget)
            log(f"visual-token budget: {budget.native_tokens} -> {budget.tokens} tokens per image"
                f" ({budget.image_size} px, pool {budget.pool})")
        else:
            module = vision_encoder(loaded)
        if options.static_shapes:
            module.batch_size = 1  # the runtime then feeds one image per call (Pipeline.encode_images)
        path = tmp / "vision_encoder.onnx"
        io_spec, size = vision_io(dynamic_batch=module.batch_size is None), loaded.preprocess.image_size
        export_role(module, trace_inputs_vision(size, module.batch_size), io_spec, path, opset=options.opset,
                    external_data=False)
        spec = options.quant_spec(GraphRole.VISION_ENCODER)
        if not spec.static and spec.precision is not Precision.FP32:
            _replace_graph(path, quantize_vision(onnx.load(str(path)), spec))
        value_range = loaded.preprocess.value_range
        revalidate[GraphRole.VISION_ENCODER] = lambda p, t: validate.validate_vision(p, module, size, t, value_range)
        cases += revalidate[GraphRole.VISION_ENCODER](path, validate.tolerance(
            Precision.FP32 if spec.static else spec.precision, GraphRole.VISION_ENCODER))
        graphs[GraphRole.VISION_ENCODER] = _graph_spec(path, tmp, options, spec if not spec.static else QuantSpec())

    log("exporting token_embedding...")
    embedding, io_spec, path = TokenEmbedding(model), embedding_io(), tmp / "token_embedding.onnx"
    export_role(embedding, trace_inputs_embedding(vocab), io_spec, path, opset=options.opset, external_data=False)
    spec = options.quant_spec(GraphRole.TOKEN_EMBEDDING)
    proto, precision = quantize_embedding(onnx.load(str(path)), spec)
    # The table goes to external data: onnxruntime maps it, and only the rows a prompt touches become resident
    # (a generation touches kilobytes of the 113 MB fp32 / 18 MB int4 table, not all of it).
    save_graph(proto, path)
    cases += validate.validate_embedding(path, embedding, vocab, validate.tolerance(precision,
                                                                                    GraphRole.TOKEN_EMBEDDING))
    graphs[GraphRole.TOKEN_EMBEDDING] = _graph_spec(path, tmp, options, dataclasses.replace(spec, precision=precision),
                                                    gather=True)

    max_context = options.max_context or loaded.max_context
    kv, decoder_spec, cases_decoder, revalidate[GraphRole.DECODER] = _export_decoder(
        loaded, model, embedding, tmp, options, max_context, log)
    graphs[GraphRole.DECODER] = decoder_spec
    cases += cases_decoder
    validate.check(cases)

    loaded.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
    tokenizer = loaded.tokenizer
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
        tools=loaded.tools,
        visual_tokens=budget,
    )
    log(f"validated {len(cases)} cases against torch")
    return manifest, revalidate


def _export_decoder(loaded: LoadedModel, model: Any, embedding: TokenEmbedding, tmp: Path, options: ExportOptions,
                    max_context: int, log: Log) -> tuple[KVCacheSpec, GraphSpec, list[validate.Case], Callable]:
    """decoder.onnx: the fast hand-built graph where the architecture has one, else torch.onnx; then quantized
    (static QDQ later, once the bundle can produce calibration inputs). Returns the re-validation closure too."""
    builder, how = select_builder(model, options.decoder_graph)
    rows = loaded.positions.rows
    if builder is not None and rows != 1:  # the fast graph derives linear positions from the mask inside GQA
        builder, how = None, f"generic torch.onnx export: {rows}-row positions ({loaded.positions.scheme})"
    spec = options.quant_spec(GraphRole.DECODER)
    now = QuantSpec() if spec.static else spec  # what the graph holds until calibration
    reference = Decoder(model, kv_spec(model).num_layers)  # the torch side of every parity case
    path, vocab = tmp / "decoder.onnx", int(model.get_input_embeddings().num_embeddings)
    if options.static_shapes:
        return _export_static_decoder(model, reference, embedding, tmp, options, max_context, now, spec, log)
    log(f"exporting decoder ({how}, {spec.precision})...")
    lora = loaded.lora if options.lora == "side-path" else None
    lora_record = {"form": "merged"} if loaded.lora is not None else {}
    if builder is not None:
        proto, kv = build_decoder(builder, model, max_context, lora)
        lora_record = lora_graph.record(lora, proto) if lora is not None else lora_record
        save_graph(quantize_decoder(proto, now), path)
        del proto

        def check(p: Path, tol: tuple[float, float]) -> list[validate.Case]:
            with torch.no_grad():
                return validate.validate_shared_decoder(p, reference, embedding, kv, vocab, tol)
    else:
        kv = kv_spec(model)
        io_spec = decoder_io(kv, position_rows=rows)
        export_role(reference, trace_inputs_decoder(int(loaded.text_config.hidden_size), kv, rows), io_spec, path,
                    opset=options.opset, external_data=True)
        if now.precision is not Precision.FP32:
            _replace_graph(path, quantize_decoder(onnx.load(str(path)), now))

        def check(p: Path, tol: tuple[float, float]) -> list[validate.Case]:
            with torch.no_grad():
                return validate.validate_decoder(p, reference, embedding, kv, vocab, tol, io_spec.input_names, rows)
    cases = check(path, validate.tolerance(now.precision, GraphRole.DECODER))
    graph = _graph_spec(path, tmp, options, now)
    lora_option = {"lora": lora_record} if lora_record else {}  # what the side path is, for users to see
    graph = dataclasses.replace(graph, options={**graph.options, "graph": how, **lora_option})
    return kv, graph, cases, check


def _export_static_decoder(model: Any, reference: Decoder, embedding: TokenEmbedding, tmp: Path,
                           options: ExportOptions, max_context: int, now: QuantSpec, spec: QuantSpec, log: Log
                           ) -> tuple[KVCacheSpec, GraphSpec, list[validate.Case], Callable]:
    """decoder.onnx as a fixed-shape single-token step with in-place KV buffers (export/static_decoder.py)."""
    step = StaticLlamaStep(model, max_context)
    kv, path, vocab = step.kv_spec(), tmp / "decoder.onnx", int(model.get_input_embeddings().num_embeddings)
    log(f"exporting decoder (static step, {max_context}-position buffers, {spec.precision})...")
    export_role(step, static_trace_inputs(step, int(model.config.get_text_config(decoder=True).hidden_size)),
                static_decoder_io(kv), path, opset=options.opset, external_data=True)
    if now.precision is not Precision.FP32:
        _replace_graph(path, quantize_decoder(onnx.load(str(path)), now))

    def check(p: Path, tol: tuple[float, float]) -> list[validate.Case]:
        with torch.no_grad():
            return validate.validate_static_decoder(p, reference, embedding, kv, vocab, tol)
    cases = check(path, validate.tolerance(now.precision, GraphRole.DECODER))
    graph = _graph_spec(path, tmp, options, now)
    return kv, dataclasses.replace(graph, options={**graph.options, "graph": "static single-token step"}), cases, check


def _quantize_static(manifest: Manifest, tmp: Path, options: ExportOptions, samples: Sequence[Sample],
                     revalidate: Revalidate, log: Log) -> tuple[Manifest, dict[GraphRole, list]]:
    """Calibrate on ``samples`` run through the staged fp32 bundle, rewrite each static graph as QDQ, re-validate."""
    from edgelmm.runtime.pipeline import Pipeline

    roles = [r for r in manifest.graphs if options.quant_spec(r).static]
    log(f"calibrating {', '.join(roles)} on {len(samples)} samples...")
    stage_manifest(tmp, manifest)
    feeds = calibration_feeds(Pipeline.load(tmp, threads=1), samples, roles)
    graphs, cases = dict(manifest.graphs), [c for c in manifest.validation["cases"]
                                            if c["graph"] not in {str(r) for r in roles}]
    for role in roles:
        spec, path = options.quant_spec(role), tmp / manifest.graphs[role].file
        _replace_graph(path, quantize_static_qdq(onnx.load(str(path)), spec, feeds[role]))
        role_cases = revalidate[role](path, validate.tolerance(spec.precision, role))
        validate.check(role_cases)
        cases += [c.to_dict() for c in role_cases]
        graph = _graph_spec(path, tmp, options, spec)
        graphs[role] = dataclasses.replace(graph, options={**manifest.graphs[role].options, **graph.options,
                                                           "calibration_samples": len(feeds[role])})
    validation = {**manifest.validation, "cases": cases, "passed": all(c["passed"] for c in cases)}
    return dataclasses.replace(manifest, graphs=graphs, validation=validation), feeds


def _recheck(loaded: LoadedModel, manifest: Manifest, tmp: Path, options: ExportOptions,
             task_check: TaskCheck | None, log: Log) -> Manifest:
    """The accuracy section: per-graph max diff vs torch, decoder agreement with fp32, task accuracy."""
    accuracy: dict[str, Any] = {
        "max_abs_diff": acc.graph_diffs(manifest.validation["cases"]),
        "precision": {str(r): str(g.precision) for r, g in manifest.graphs.items()},
    }
    if options.check_tokens or task_check:
        stage_manifest(tmp, manifest)
        from edgelmm.runtime.pipeline import Pipeline

        if options.check_tokens:
            log(f"re-checking the bundle: teacher-forced agreement with fp32 over {options.check_tokens} tokens...")
            pipe = Pipeline.load(tmp, threads=1)
            accuracy["decoder_agreement"] = acc.decoder_agreement(loaded.model, pipe, options.check_tokens)
            del pipe
        if task_check:
            log("re-checking the bundle: task accuracy through the runtime...")
            accuracy["task"] = task_check(tmp)
    return dataclasses.replace(manifest, accuracy=accuracy)


def _replace_graph(path: Path, proto: onnx.ModelProto) -> None:
    """Write a rewritten (quantized) ``proto`` over the graph at ``path``, its old external data removed first."""
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    save_graph(proto, path)


def _graph_spec(path: Path, root: Path, options: ExportOptions, spec: QuantSpec, *, gather: bool = False) -> GraphSpec:
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
        precision=spec.precision,
        opset=int(opset),
        inputs=tuple(_tensor_spec(v) for v in proto.graph.input),
        outputs=tuple(_tensor_spec(v) for v in proto.graph.output),
        external_data=tuple(external),
        options=spec.options(gather=gather),
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


def _option(value: Any) -> Any:
    """An export option as JSON: specs as dicts, everything else as its string."""
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    return None if value is None else str(value)


def _provenance(loaded: LoadedModel, options: ExportOptions, started: float) -> dict[str, Any]:
    return {
        "model": loaded.name,
        "export_options": {f.name: _option(getattr(options, f.name)) for f in dataclasses.fields(options)},
        "versions": {p: _version(p) for p in ("edgelmm", "torch", "transformers", "onnx", "onnxscript", "onnxruntime")},
        "git_commit": git_commit(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - started, 1),
    }

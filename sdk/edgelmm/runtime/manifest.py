"""The bundle manifest: the only thing the runtime reads about a model.

The schema lives here; export writes it with these same dataclasses, so the two cannot drift. A bundle is untrusted
input (a phone downloads it): :func:`load_bundle` checks the schema version, every file's path, size and sha256 and
the manifest's invariants before any onnxruntime session exists.

Bundle layout::

    manifest.json            this schema (written last)
    vision_encoder.onnx      pixel_values -> image features in LM embedding space (LLaVA bundles only)
    token_embedding.onnx     input_ids -> inputs_embeds
    decoder.onnx (+ .data)   inputs_embeds, attention_mask, position_ids, past KV -> logits, present KV
    tokenizer.json           HF tokenizers file
    item_encoder.onnx        item_cf -> item tokens in LM embedding space (Item-Language Model bundles only)
    cf_table.bin             the CF item table the runtime gathers item_cf rows from (runtime/items.py format)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import string
from pathlib import Path
from typing import Any

from edgelmm import strict_json
from edgelmm.errors import BundleError, BundleIntegrityError, SpecError
from edgelmm.runtime.bundle_files import verify_files, verify_graphs
from edgelmm.runtime.manifest_rules import check_invariants
from edgelmm.specs import SPEC, GenerationSpec, GraphRole, ModelKind, Precision, from_dict, to_dict

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edgelmm-bundle"
MAX_MANIFEST_BYTES = 16 * 2**20  # a manifest is a few KB; refuse anything that could exhaust memory
MAX_JSON_DEPTH = 64
# Upper bounds on sizes the runtime allocates from: far above any model a phone runs, far below what exhausts one.
MAX_LAYERS = 1024
MAX_CONTEXT = 2**22
MAX_IMAGE_SIDE = 8192
MAX_HEADS_OR_DIM = 2**16

KV_LAYOUTS = ("past-present", "shared-buffer", "static-buffer")
"""past-present: the decoder takes past K/V [B, kv_heads, past, head_dim] and returns present K/V of past + new
(the runtime feeds each present back as the next past: the whole cache is rewritten every step).
shared-buffer: past and present are one preallocated buffer [B, kv_heads, capacity, head_dim] per layer and tensor,
bound to both names; the decoder writes only the new rows in place. ``attention_mask`` [B, past + S] tells it how
many rows are real. ``max_length`` bounds the capacity (the graph's rotary tables end there).
static-buffer: an NPU step at fixed shapes: one token per call, buffers of exactly ``max_length`` rows, attention_mask
[1, max_length] with ones up to this token; the graph returns the buffers with this token's row written."""
PREPROCESS_MODES = ("squash", "shortest-edge-crop", "longest-edge-squash", "tiles")
POSITION_SCHEMES = ("linear", "mrope")


@dataclasses.dataclass(**SPEC)
class TensorSpec:
    """One graph input or output. Symbolic dims are strings (``batch_size``, ``sequence_length``...)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclasses.dataclass(**SPEC)
class FileEntry:
    """Integrity record for one file of the bundle."""

    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef"):
            raise SpecError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r:.70}")
        if self.bytes < 0:
            raise SpecError(f"bytes must be >= 0, got {self.bytes}")


@dataclasses.dataclass(**SPEC)
class GraphSpec:
    """One ONNX graph of the bundle."""

    file: str
    """Path relative to the bundle directory; must be listed in ``Manifest.files``."""
    precision: Precision
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: tuple[str, ...] = ()
    """External-data files this graph references (each listed in ``Manifest.files``)."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Export options that change numerics (quantization block size, accuracy level...), for the record."""

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.file)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.file)


@dataclasses.dataclass(**SPEC)
class KVCacheSpec:
    """How the decoder's KV cache is named and shaped. Templates take ``{layer}``."""

    layout: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float32"
    past_key: str = "past_key_values.{layer}.key"
    past_value: str = "past_key_values.{layer}.value"
    present_key: str = "present.{layer}.key"
    present_value: str = "present.{layer}.value"
    max_length: int = 0
    """shared-buffer only: the most positions (prompt + generated) the decoder graph can address; 0 = unbounded."""

    def __post_init__(self) -> None:
        if self.layout not in KV_LAYOUTS:
            raise SpecError(f"kv_cache.layout '{self.layout}' is not supported; valid: {', '.join(KV_LAYOUTS)}")
        for n, top in (("num_layers", MAX_LAYERS), ("num_kv_heads", MAX_HEADS_OR_DIM), ("head_dim", MAX_HEADS_OR_DIM)):
            if not 1 <= getattr(self, n) <= top:
                raise SpecError(f"kv_cache.{n} must be in [1, {top}], got {getattr(self, n)}")
        if self.dtype not in ("float32", "float16"):
            raise SpecError(f"kv_cache.dtype '{self.dtype}' is not supported; valid: float32, float16")
        for n in ("past_key", "past_value", "present_key", "present_value"):
            template = getattr(self, n)
            # str.format runs whatever the template asks ("{layer:>999999999}" allocates a GB): allow only {layer}
            try:
                fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
            except ValueError:
                fields = None
            if fields != [("layer", "", None)]:
                raise SpecError(f"kv_cache.{n} {template!r:.60} must contain '{{layer}}' once and no other field")
        if self.layout in ("shared-buffer", "static-buffer") and not 2 <= self.max_length <= MAX_CONTEXT:
            raise SpecError(f"kv_cache.max_length must be in [2, {MAX_CONTEXT}] for the {self.layout} layout")

    def names(self, kind: str) -> list[str]:
        """All layer names for ``kind`` in ("past_key", "past_value", "present_key", "present_value")."""
        template = getattr(self, kind)
        return [template.format(layer=i) for i in range(self.num_layers)]


@dataclasses.dataclass(**SPEC)
class PreprocessSpec:
    """Image -> pixel_values, exactly. The runtime follows it; export checks it against the HF image processor."""

    image_size: tuple[int, int]
    """(height, width) fed to the vision encoder."""
    resize: str = "bicubic"
    """PIL resampling filter: nearest, bilinear, bicubic, lanczos."""
    mode: str = "squash"
    """squash: resize to image_size ignoring aspect (SigLIP, Imp's if_squash, Qwen2-VL's fixed grid);
    shortest-edge-crop: resize the short side to ``shortest_edge`` keeping aspect, then centre-crop to image_size
    (CLIP); longest-edge-squash: resize the long side to ``longest_edge`` keeping aspect, then squash to image_size
    (Idefics3 / SmolVLM without image splitting); tiles: Idefics3 / SmolVLM image splitting (long side to
    ``longest_edge``, both sides up to multiples of image_size, cut into image_size tiles row by row, then the whole
    image squashed to one more tile), see runtime/preprocess.py."""
    shortest_edge: int = 0
    longest_edge: int = 0
    """Target of the long side for modes longest-edge-squash and tiles."""
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    value_range: tuple[float, float] = (-1.0, 1.0)
    """Range of pixel_values after normalisation: ((0 - mean) / std, (255 * rescale - mean) / std) over channels."""

    def __post_init__(self) -> None:
        if self.resize not in ("nearest", "bilinear", "bicubic", "lanczos"):
            raise SpecError(f"preprocess.resize '{self.resize}' is not supported;"
                            " valid: nearest, bilinear, bicubic, lanczos")
        if self.mode not in PREPROCESS_MODES:
            raise SpecError(f"preprocess.mode '{self.mode}' is not supported; valid: {', '.join(PREPROCESS_MODES)}")
        if self.mode == "shortest-edge-crop" and self.shortest_edge < min(self.image_size):
            raise SpecError("preprocess.shortest_edge must be >= the crop size for mode shortest-edge-crop")
        if self.mode in ("longest-edge-squash", "tiles") and self.longest_edge < 1:
            raise SpecError(f"preprocess.longest_edge must be >= 1 for mode {self.mode}")
        if self.mode == "tiles" and self.image_size[0] != self.image_size[1]:
            raise SpecError("preprocess.image_size must be square for mode tiles")
        if self.channel_order not in ("RGB", "BGR") or self.layout not in ("NCHW", "NHWC"):
            raise SpecError("preprocess: channel_order must be RGB|BGR and layout NCHW|NHWC")
        if not all(1 <= side <= MAX_IMAGE_SIDE for side in self.image_size) or self.shortest_edge > MAX_IMAGE_SIDE:
            raise SpecError(f"preprocess: image_size and shortest_edge must be in [1, {MAX_IMAGE_SIDE}]")
        numbers = (self.rescale_factor, *self.mean, *self.std, *self.value_range)
        if not all(math.isfinite(x) for x in numbers) or any(s == 0 for s in self.std) or self.rescale_factor <= 0:
            raise SpecError("preprocess: rescale_factor, mean, std and value_range must be finite, std non-zero")
        if self.dtype != "float32":
            raise SpecError(f"preprocess.dtype '{self.dtype}' is not supported; valid: float32")


@dataclasses.dataclass(**SPEC)
class ImagePromptSpec:
    """How each image placeholder the chat template emits becomes prompt text (the processor's expansion).

    Every string is template text (tokenized with special tokens parsed) in which ``{image}`` stands for one tile's
    ``num_image_tokens`` image slots. LLaVA and Qwen2-VL use the default ``{image}``; Idefics3 / SmolVLM wrap
    tiles in ``<fake_token_around_image>`` with ``<row_{row}_col_{col}>`` / ``<global-img>`` tags.
    """

    single: str = "{image}"
    """An image encoded as a single tile (every mode but tiles, or a tiles image no larger than one tile)."""
    tile: str = ""
    """One tile of a split image; ``{row}`` and ``{col}`` count from 1."""
    row_end: str = ""
    """Text after each row of tiles."""
    overview: str = ""
    """Text after the tiles, for the whole image squashed into one more tile."""

    def __post_init__(self) -> None:
        for name in ("single", "tile", "overview"):
            text = getattr(self, name)
            if text and text.count("{image}") != 1:
                raise SpecError(f"text.image_prompt.{name} must contain '{{image}}' exactly once, got {text!r:.80}")
        if bool(self.tile) != bool(self.overview):
            raise SpecError("text.image_prompt: tile and overview are set together (image splitting) or not at all")


@dataclasses.dataclass(**SPEC)
class PositionSpec:
    """Decoder position ids. linear: ``position_ids`` int64 [B, S] counting positions. mrope (Qwen2-VL M-RoPE):
    ``position_ids`` int64 [3, B, S], (time, row, column) per token: text tokens repeat their index in all three,
    an image's tokens share time = start and take start + row / start + column of ``image_grid``, and the text
    after an image continues from start + max(rows, cols)."""

    scheme: str = "linear"
    image_grid: tuple[int, int] = (0, 0)
    """mrope: (rows, cols) of one image's tokens as the decoder sees them (after the vision merger)."""

    def __post_init__(self) -> None:
        if self.scheme not in POSITION_SCHEMES:
            raise SpecError(f"positions.scheme '{self.scheme}' is not supported; valid: {', '.join(POSITION_SCHEMES)}")
        if self.scheme == "mrope" and min(self.image_grid) < 1:
            raise SpecError("positions.image_grid must be two positive integers for scheme mrope")

    @property
    def rows(self) -> int:
        """Leading dimension of the decoder's position_ids (1 means shape [B, S])."""
        return 3 if self.scheme == "mrope" else 1


@dataclasses.dataclass(**SPEC)
class TextSpec:
    """Tokenizer, chat template and special tokens."""

    tokenizer_file: str
    max_context: int
    eos_token_ids: tuple[int, ...]
    chat_template: str | None = None
    """Jinja2 chat template (HF conventions: messages, add_generation_prompt, bos_token, eos_token)."""
    bos_token: str | None = None
    eos_token: str | None = None
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    image_token: str | None = None
    """Placeholder the chat template emits for one image; the runtime expands it to ``num_image_tokens`` slots."""
    image_token_id: int | None = None
    num_image_tokens: int = 0
    """Visual tokens per tile (per image unless preprocess.mode is tiles): the decoder positions one tile occupies."""
    image_prompt: ImagePromptSpec = ImagePromptSpec()
    """How the template's image placeholder expands (default: ``num_image_tokens`` image tokens)."""

    def __post_init__(self) -> None:
        problems = []
        if not 2 <= self.max_context <= MAX_CONTEXT:
            problems.append(f"max_context must be in [2, {MAX_CONTEXT}], got {self.max_context}")
        elif not 0 <= self.num_image_tokens < self.max_context:
            problems.append(f"num_image_tokens must be in [0, max_context), got {self.num_image_tokens}")
        ids = (*self.eos_token_ids, self.bos_token_id, self.pad_token_id, self.image_token_id)
        if any(i is not None and i < 0 for i in ids):
            problems.append("token ids must be >= 0")
        if problems:
            raise SpecError("text: " + "; ".join(problems))


@dataclasses.dataclass(**SPEC)
class ItemsSpec:
    """Items as inputs (Item-Language Model bundles): the CF table and how items enter the prompt.

    The runtime reads row ``id`` of ``table_file`` (runtime/items.py format) for each requested item, runs the
    ``item_encoder`` graph (item_cf float32 [N, cf_dim] -> item_tokens float32 [N, num_item_tokens, hidden]) and
    writes the tokens at the prompt's ``placeholder`` positions, in order.
    """

    table_file: str
    num_items: int
    cf_dim: int
    num_item_tokens: int
    placeholder: str = "<item>"

    def __post_init__(self) -> None:
        if not (1 <= self.num_items <= 2**31 and 1 <= self.cf_dim <= MAX_HEADS_OR_DIM
                and 1 <= self.num_item_tokens <= MAX_HEADS_OR_DIM):
            raise SpecError(f"items: num_items, cf_dim and num_item_tokens out of range: {self}")
        if self.placeholder != "<item>":
            raise SpecError(f"items.placeholder {self.placeholder!r:.30} is not supported; valid: '<item>'")


@dataclasses.dataclass(**SPEC)
class ModelInfo:
    """What was exported."""

    name: str
    kind: ModelKind
    architecture: str
    """The transformers class that was exported (LlavaForConditionalGeneration, LlamaForCausalLM...)."""
    hidden_size: int
    vocab_size: int
    num_layers: int
    model_type: str = ""

    def __post_init__(self) -> None:
        if not all(1 <= v <= 2**31 for v in (self.hidden_size, self.vocab_size, self.num_layers)):
            raise SpecError("model: hidden_size, vocab_size and num_layers must be in [1, 2**31]")


@dataclasses.dataclass(**SPEC)
class VisualTokenSpec:
    """A visual-token budget the vision graph was exported with (export/visual_tokens.py). The runtime needs only
    ``text.num_image_tokens`` and ``preprocess.image_size``, which already say the result; this records the cost."""

    native_image_size: int
    image_size: int
    """Square size the vision graph takes (== preprocess.image_size)."""
    native_tokens: int
    pool: int = 1
    """k x k average pooling after the connector."""
    tokens: int = 0
    """Visual tokens per image after the budget (== text.num_image_tokens)."""
    retraining: str = ""
    """What recovers the accuracy this budget costs, when the recipe says."""

    def __post_init__(self) -> None:
        if not (1 <= self.image_size <= MAX_IMAGE_SIDE and 1 <= self.native_image_size <= MAX_IMAGE_SIDE
                and self.pool >= 1 and 0 <= self.tokens <= self.native_tokens):
            raise SpecError("visual_tokens: sizes must be in [1, 8192], pool >= 1, 0 <= tokens <= native_tokens")


@dataclasses.dataclass(**SPEC)
class Manifest:
    """The whole manifest.json."""

    schema_version: int
    format: str
    edgelmm_version: str
    model: ModelInfo
    graphs: dict[GraphRole, GraphSpec]
    files: dict[str, FileEntry]
    kv_cache: KVCacheSpec
    text: TextSpec
    generation: GenerationSpec = GenerationSpec()
    preprocess: PreprocessSpec | None = None
    positions: PositionSpec = PositionSpec()
    invariants: dict[str, Any] = dataclasses.field(default_factory=dict)
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The export's parity report: tolerances, per-graph cases with max abs diff, passed."""
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    """edgelmm/torch/transformers/onnx/onnxruntime versions, git commit, export options, time."""
    created_by: str = "edgelmm export"
    tools: tuple[str, ...] = ()
    """Tool ids of a tool-selection model (MLLM-Tool): the demo's tool mode decodes under Choice(tools)."""
    items: ItemsSpec | None = None
    """Item-Language Model bundles: the CF table and the item_encoder graph's contract (None: no item inputs)."""
    visual_tokens: VisualTokenSpec | None = None
    """The visual-token budget of the vision graph, when the export applied one."""
    accuracy: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The export's accuracy re-check of the finished bundle (export/accuracy.py): per-graph max abs diff vs torch,
    decoder top-1 agreement with fp32, task accuracy through the runtime, providers it ran on."""

    @property
    def has_vision(self) -> bool:
        return GraphRole.VISION_ENCODER in self.graphs

    @property
    def has_items(self) -> bool:
        return self.items is not None

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, sort_keys=False) + "\n"


def _by_name(specs: tuple[TensorSpec, ...], name: str, where: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise BundleError(f"{where}: graph has no tensor '{name}'; has: {', '.join(s.name for s in specs)}")


# ----------------------------------------------------------------------------------------------------------------
# Loading and verification (the cross-field rules: manifest_rules.py; file checks: bundle_files.py)


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Parse and validate ``manifest.json`` (schema version first, then every field). Files are not checked."""
    if not isinstance(bundle_dir, str | os.PathLike):
        raise BundleError(f"a bundle is a directory path, got {type(bundle_dir).__name__}")
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle directory '{root}' does not exist or is not a directory")
    path = root / MANIFEST_NAME
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise BundleError(f"'{root}' is not a bundle: {MANIFEST_NAME} is missing (an interrupted export?)") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleIntegrityError(f"'{path}' is not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"'{path}' is {st.st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
    return parse_manifest(strict_json.loads(path.read_bytes(), where=str(path), error=BundleError), where=str(path))


def parse_manifest(data: Any, *, where: str = MANIFEST_NAME) -> Manifest:
    """Manifest from a decoded JSON object, checking format and schema version before anything else."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
    strict_json.check_values(data, where=where, error=BundleError, max_depth=MAX_JSON_DEPTH)
    if data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: format is {data.get('format')!r:.40}, expected '{BUNDLE_FORMAT}'")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: unknown schema_version {version!r:.20}; this edgelmm reads schema_version {SCHEMA_VERSION}"
            " (re-export the bundle with this edgelmm version)"
        )
    try:
        manifest = from_dict(Manifest, data, where=where)
    except SpecError as exc:
        raise BundleError(str(exc)) from None
    check_invariants(manifest, where=where)
    return manifest


def load_bundle(bundle_dir: str | os.PathLike[str], *, check_hashes: bool = True) -> Manifest:
    """Read the manifest and verify every file and graph before anything else touches the bundle.

    Order: schema and fields; every file's path, size and sha256; each graph's I/O and external-data paths (a
    streaming protobuf walk, weights unread). ``check_hashes=False`` skips only the sha256 pass.
    """
    manifest = read_manifest(bundle_dir)
    verify_files(Path(bundle_dir), manifest, check_hashes=check_hashes)
    verify_graphs(Path(bundle_dir), manifest)
    return manifest

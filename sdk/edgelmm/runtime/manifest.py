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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from edgelmm.errors import BundleError, BundleIntegrityError, SpecError
from edgelmm.specs import SPEC, GenerationSpec, GraphRole, ModelKind, Precision, from_dict, to_dict

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edgelmm-bundle"
MAX_MANIFEST_BYTES = 16 * 2**20  # a manifest is a few KB; refuse anything that could exhaust memory

KV_LAYOUTS = ("past-present",)
"""past-present: the decoder takes past K/V [B, kv_heads, past, head_dim] and returns present K/V of past + new."""
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

    def __post_init__(self) -> None:
        if self.layout not in KV_LAYOUTS:
            raise SpecError(f"kv_cache.layout '{self.layout}' is not supported; valid: {', '.join(KV_LAYOUTS)}")
        for n in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, n) < 1:
                raise SpecError(f"kv_cache.{n} must be >= 1")

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
            raise SpecError(f"preprocess.resize '{self.resize}' is not supported; valid: nearest, bilinear, bicubic, lanczos")
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
        if min(self.image_size) < 1 or any(s == 0 for s in self.std):
            raise SpecError("preprocess: image_size must be positive and std non-zero")


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

    @property
    def has_vision(self) -> bool:
        return GraphRole.VISION_ENCODER in self.graphs

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, sort_keys=False) + "\n"


def _by_name(specs: tuple[TensorSpec, ...], name: str, where: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise BundleError(f"{where}: graph has no tensor '{name}'; has: {', '.join(s.name for s in specs)}")


# ----------------------------------------------------------------------------------------------------------------
# Loading and verification


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Parse and validate ``manifest.json`` (schema version first, then every field). Files are not checked."""
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
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"'{path}' is not valid JSON: {exc}") from None
    return parse_manifest(data, where=str(path))


def parse_manifest(data: Any, *, where: str = MANIFEST_NAME) -> Manifest:
    """Manifest from a decoded JSON object, checking format and schema version before anything else."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
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


def check_invariants(manifest: Manifest, *, where: str = MANIFEST_NAME) -> None:
    """Cross-field rules: required graphs, file listing, widths that must agree (llama.cpp's mmproj rule)."""
    problems: list[str] = []
    graphs = manifest.graphs
    for role in (GraphRole.TOKEN_EMBEDDING, GraphRole.DECODER):
        if role not in graphs:
            problems.append(f"graph '{role}' is missing")
    for role, graph in graphs.items():
        for name in (graph.file, *graph.external_data):
            if name not in manifest.files:
                problems.append(f"graph '{role}' file '{name}' is not listed in files")
    if manifest.text.tokenizer_file not in manifest.files:
        problems.append(f"tokenizer file '{manifest.text.tokenizer_file}' is not listed in files")
    hidden = manifest.model.hidden_size
    if GraphRole.DECODER in graphs:
        width = _last_dim(graphs[GraphRole.DECODER], "inputs_embeds", inputs=True, problems=problems)
        if width not in (None, hidden):
            problems.append(f"decoder inputs_embeds width {width} != model.hidden_size {hidden}")
    if GraphRole.TOKEN_EMBEDDING in graphs:
        width = _last_dim(graphs[GraphRole.TOKEN_EMBEDDING], "inputs_embeds", inputs=False, problems=problems)
        if width not in (None, hidden):
            problems.append(f"token_embedding output width {width} != model.hidden_size {hidden}")
    if manifest.has_vision:
        vision = graphs[GraphRole.VISION_ENCODER]
        width = _last_dim(vision, "image_features", inputs=False, problems=problems)
        if width not in (None, hidden):
            problems.append(f"vision_encoder output width {width} != decoder hidden size {hidden}")
        text = manifest.text
        if manifest.preprocess is None:
            problems.append("a bundle with a vision_encoder needs a preprocess section")
        if text.image_token_id is None or text.image_token is None or text.num_image_tokens < 1:
            problems.append("a bundle with a vision_encoder needs text.image_token, image_token_id, num_image_tokens")
        tokens = _dim(vision, "image_features", 1, problems)
        if isinstance(tokens, int) and tokens != text.num_image_tokens:
            problems.append(f"vision_encoder emits {tokens} tokens per image, text.num_image_tokens says {text.num_image_tokens}")
    problems += _family_field_problems(manifest)
    if manifest.text.max_context < 2:
        problems.append("text.max_context must be >= 2")
    if problems:
        raise BundleError(f"{where}: invalid manifest: " + "; ".join(problems))


def _family_field_problems(manifest: Manifest) -> list[str]:
    """The optional family fields (tiles, image prompt, M-RoPE) agree with each other and with the graphs."""
    problems = []
    tiled = manifest.preprocess is not None and manifest.preprocess.mode == "tiles"
    if manifest.has_vision and tiled != bool(manifest.text.image_prompt.tile):
        problems.append("preprocess.mode tiles and text.image_prompt.tile/overview go together")
    positions, tokens = manifest.positions, manifest.text.num_image_tokens
    if positions.scheme == "mrope" and positions.image_grid[0] * positions.image_grid[1] != tokens:
        problems.append(f"positions.image_grid {positions.image_grid} does not hold text.num_image_tokens {tokens}")
    decoder = manifest.graphs.get(GraphRole.DECODER)
    shape = next((t.shape for t in decoder.inputs if t.name == "position_ids"), None) if decoder else None
    rank = 3 if positions.rows > 1 else 2
    if shape is not None and len(shape) != rank:
        problems.append(f"decoder position_ids has rank {len(shape)}; positions.scheme {positions.scheme} needs {rank}")
    return problems


def _dim(graph: GraphSpec, name: str, axis: int, problems: list[str], *, inputs: bool = False) -> int | str | None:
    specs = graph.inputs if inputs else graph.outputs
    for spec in specs:
        if spec.name == name:
            return spec.shape[axis] if -len(spec.shape) <= axis < len(spec.shape) else None
    problems.append(f"graph '{graph.file}' has no {'input' if inputs else 'output'} '{name}'")
    return None


def _last_dim(graph: GraphSpec, name: str, *, inputs: bool, problems: list[str]) -> int | str | None:
    return _dim(graph, name, -1, problems, inputs=inputs)


def safe_path(root: Path, name: str) -> Path:
    """Resolve ``name`` inside ``root``; refuse absolute paths, ``..``, and symlinks anywhere on the way."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name:
        raise BundleIntegrityError(f"bundle file name '{name}' is not a plain relative path")
    parts = Path(name).parts
    if any(p in ("..", ".") for p in parts):
        raise BundleIntegrityError(f"bundle file name '{name}' points outside the bundle")
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise BundleIntegrityError(f"bundle file '{name}' is a symbolic link; bundles hold plain files only")
    return path


def sha256_file(path: Path, *, chunk: int = 4 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_files(root: Path, manifest: Manifest, *, check_hashes: bool = True) -> None:
    """Every listed file exists inside the bundle with the recorded size (and sha256); first failure raises."""
    for name, entry in manifest.files.items():
        path = safe_path(root, name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise BundleIntegrityError(f"bundle file '{name}' is missing from '{root}'") from None
        if not stat.S_ISREG(st.st_mode):
            raise BundleIntegrityError(f"bundle file '{name}' is not a regular file")
        if st.st_size != entry.bytes:
            raise BundleIntegrityError(
                f"bundle file '{name}' is {st.st_size} bytes, manifest says {entry.bytes} (truncated or replaced)"
            )
        if check_hashes:
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise BundleIntegrityError(
                    f"bundle file '{name}' sha256 {digest[:16]}... != manifest {entry.sha256[:16]}... (tampered or corrupt)"
                )


def load_bundle(bundle_dir: str | os.PathLike[str], *, check_hashes: bool = True) -> Manifest:
    """Read the manifest and verify every file before anything else touches the bundle."""
    manifest = read_manifest(bundle_dir)
    verify_files(Path(bundle_dir), manifest, check_hashes=check_hashes)
    return manifest

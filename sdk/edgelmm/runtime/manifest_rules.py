"""The manifest's cross-field rules: what :func:`check_invariants` refuses before any file or session is touched.

Split from manifest.py (the schema); export runs the same rules on the manifest it is about to write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgelmm.errors import BundleError
from edgelmm.specs import GraphRole

if TYPE_CHECKING:
    from edgelmm.runtime.manifest import GraphSpec, Manifest


def check_invariants(manifest: Manifest, *, where: str) -> None:
    """Cross-field rules: required graphs, file listing, widths that must agree (llama.cpp's mmproj rule)."""
    problems: list[str] = []
    graphs = manifest.graphs
    if len(set(manifest.tools)) != len(manifest.tools) or not all(0 < len(t) <= 512 for t in manifest.tools):
        problems.append("tools must be distinct ids of 1..512 characters")
    for role in (GraphRole.TOKEN_EMBEDDING, GraphRole.DECODER):
        if role not in graphs:
            problems.append(f"graph '{role}' is missing")
    for role, graph in graphs.items():
        for name in (graph.file, *graph.external_data):
            if name not in manifest.files:
                problems.append(f"graph '{role}' file '{name}' is not listed in files")
    if manifest.text.tokenizer_file not in manifest.files:
        problems.append(f"tokenizer file '{manifest.text.tokenizer_file}' is not listed in files")
    problems += _io_problems(manifest)
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
            problems.append(
                f"vision_encoder emits {tokens} tokens per image, text.num_image_tokens says {text.num_image_tokens}")
    problems += _family_field_problems(manifest) + _item_problems(manifest)
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
    budget = manifest.visual_tokens
    if budget is not None and (budget.tokens != tokens or manifest.preprocess is None
                               or tuple(manifest.preprocess.image_size) != (budget.image_size, budget.image_size)):
        problems.append(f"visual_tokens ({budget.tokens} tokens at {budget.image_size} px) disagrees with"
                        " text.num_image_tokens / preprocess.image_size")
    decoder = manifest.graphs.get(GraphRole.DECODER)
    shape = next((t.shape for t in decoder.inputs if t.name == "position_ids"), None) if decoder else None
    rank = 3 if positions.rows > 1 else 2
    if shape is not None and len(shape) != rank:
        problems.append(f"decoder position_ids has rank {len(shape)}; positions.scheme {positions.scheme} needs {rank}")
    if decoder and shape is None and rank != 2:  # a shared-buffer graph derives linear positions from the mask
        problems.append(f"decoder has no position_ids input (linear positions only); positions.scheme"
                        f" {positions.scheme} needs rank {rank}")
    return problems


def _item_problems(manifest: Manifest) -> list[str]:
    """An item_encoder graph and the items section go together, and their widths agree."""
    graph, items = manifest.graphs.get(GraphRole.ITEM_ENCODER), manifest.items
    if graph is None and items is None:
        return []
    if graph is None or items is None:
        return ["an item_encoder graph and the items section go together"]
    problems = []
    if items.table_file not in manifest.files:
        problems.append(f"items.table_file '{items.table_file}' is not listed in files")
    cf_dim = _dim(graph, "item_cf", -1, problems, inputs=True)
    if cf_dim not in (None, items.cf_dim):
        problems.append(f"item_encoder item_cf width {cf_dim} != items.cf_dim {items.cf_dim}")
    shape = next((t.shape for t in graph.outputs if t.name == "item_tokens"), None)
    if shape is not None and (len(shape) != 3 or shape[1:] != (items.num_item_tokens, manifest.model.hidden_size)):
        problems.append(f"item_encoder item_tokens shape {list(shape)} is not [N, {items.num_item_tokens}, "
                        f"{manifest.model.hidden_size}]")
    return problems


def io_contract(manifest: Manifest) -> dict[GraphRole, tuple[dict[str, str], dict[str, str]]]:
    """Per role: the tensors the runtime feeds (exactly these) and reads (at least these), name -> dtype.

    The one place that states what pipeline.py and generate.py pass to each graph: when the runtime learns to feed
    something new (another KV layout, a VLM family's extra vision inputs), extend it here.
    """
    contract = {
        GraphRole.VISION_ENCODER: ({"pixel_values": "float32"}, {"image_features": "float32"}),
        GraphRole.TOKEN_EMBEDDING: ({"input_ids": "int64"}, {"inputs_embeds": "float32"}),
        GraphRole.ITEM_ENCODER: ({"item_cf": "float32"}, {"item_tokens": "float32"}),
    }
    kv = manifest.kv_cache
    past = {n: kv.dtype for kind in ("past_key", "past_value") for n in kv.names(kind)}
    present = {n: kv.dtype for kind in ("present_key", "present_value") for n in kv.names(kind)}
    # past-present decoders take explicit positions; shared-buffer ones derive them from attention_mask and take
    # logits_to_keep; static-buffer steps (NPU) derive the position from the mask too (decoding.py binds exactly these)
    extra = {"past-present": {"position_ids": "int64"}, "static-buffer": {}}.get(kv.layout, {"logits_to_keep": "int64"})
    feeds = {"inputs_embeds": "float32", "attention_mask": "int64", **extra, **past}
    contract[GraphRole.DECODER] = (feeds, {"logits": "float32", **present})
    return contract


def _io_problems(manifest: Manifest) -> list[str]:
    """The graphs' declared I/O must be what the runtime feeds and reads, with the shapes it allocates."""
    problems = []
    for role, (feeds, reads) in io_contract(manifest).items():
        graph = manifest.graphs.get(role)
        if graph is None:
            continue
        inputs = {t.name: t.dtype for t in graph.inputs}
        outputs = {t.name: t.dtype for t in graph.outputs}
        wrong = sorted(set(inputs.items()) ^ set(feeds.items())) + sorted(set(reads.items()) - set(outputs.items()))
        if wrong:
            problems.append(f"graph '{role}' I/O is not what the runtime feeds and reads: (name, dtype) {wrong[:4]}")
            continue
        shapes = {t.name: tuple(t.shape) for t in graph.inputs}
        if role is GraphRole.DECODER:
            kv = manifest.kv_cache
            for name in (n for kind in ("past_key", "past_value") for n in kv.names(kind)):
                shape = shapes[name]
                heads_dim = zip(shape[1::2], (kv.num_kv_heads, kv.head_dim))
                if len(shape) != 4 or any(isinstance(d, int) and d != want for d, want in heads_dim):
                    want = f"[batch, {kv.num_kv_heads}, past, {kv.head_dim}]"
                    problems.append(f"decoder input '{name}' shape {list(shape)} is not {want} as kv_cache says")
                    break
        if role is GraphRole.VISION_ENCODER and manifest.preprocess is not None:
            pre, shape = manifest.preprocess, shapes["pixel_values"]
            hw, channels = ((2, 3), 1) if pre.layout == "NCHW" else ((1, 2), 3)
            expected = {hw[0]: pre.image_size[0], hw[1]: pre.image_size[1], channels: 3}
            if len(shape) != 4 or any(isinstance(shape[a], int) and shape[a] != v for a, v in expected.items()):
                problems.append(f"vision_encoder pixel_values shape {list(shape)} does not fit preprocess"
                                f" {pre.layout} image_size {list(pre.image_size)}")
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

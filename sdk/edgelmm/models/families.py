"""FAMILIES: the model families edgelmm exports, as data. Stdlib only: listing them never imports torch.

Each entry records what a bundle of the family holds and how it was verified; the README's support table is generated
from it (``edgelmm export --families``; tests/models/test_families.py regenerates the table and compares). The runtime never
sees a family: an export writes everything family-specific into optional manifest fields (``preprocess.mode``,
``text.image_prompt``, ``positions``), and the runtime follows those.

Adding a family: a loader (``HF directory -> LoadedModel``), a vision module in models/vision.py, an entry here, and a
tiny-config case in tests/export/test_families.py whose id goes into ``verified_by``.
"""

from __future__ import annotations

import dataclasses
import re

from edgelmm.errors import UnsupportedModelError
from edgelmm.registry import lookup
from edgelmm.specs import GraphRole, Precision

TRANSFORMERS_VERIFIED = ">=5.24,<5.40"
"""transformers versions the exports are verified with: the [export] extra's pin, under which the parity tests run.
Model code, cache classes and the vision precompute hooks (``transformers.vision_utils``) change between releases, so
outside this range an export refuses to start rather than produce a bundle nobody checked."""

PARITY_TEST = "tests/export/test_families.py"
VISION_GRAPHS = (GraphRole.VISION_ENCODER, GraphRole.TOKEN_EMBEDDING, GraphRole.DECODER)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    """One exportable model family: what its bundle holds, how each part works, how it was verified."""

    name: str
    title: str
    architectures: tuple[str, ...]
    """``config.json`` architectures handled by this family."""
    load: str
    """"module:function": a Hugging Face directory -> LoadedModel (imported lazily)."""
    graphs: tuple[GraphRole, ...]
    vision: str = ""
    """"module:class" of the torch module exported as vision_encoder (pixel_values -> image features)."""
    vision_wrapper: str = ""
    placeholder: str = ""
    """How one image placeholder expands (the manifest's text.image_prompt)."""
    positions: str = "linear"
    """Position-id scheme (the manifest's positions.scheme)."""
    fixed_grid: bool = False
    """The bundle takes one image size chosen at export (``--image-size``), not the tower's trained size."""
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    """Precisions verified for the family: its parity cases pass at each (fp32, the exporter's only one today)."""
    towers: tuple[str, ...] = ()
    """Accepted ``vision_config.model_type`` values (empty: the family's own tower)."""
    language_models: tuple[str, ...] = ()
    """Verified ``text_config.model_type`` values (empty: any decoder-only LM)."""
    verified_by: tuple[str, ...] = ()
    """Case ids of the parity tests in PARITY_TEST (a test checks that each exists)."""
    inputs: str = "2 images x 2 prompts"
    """What each parity case feeds (the table's "verified how")."""
    notes: str = ""
    transformers: str = TRANSFORMERS_VERIFIED


FAMILIES: dict[str, Family] = {
    # transformers LlavaForConditionalGeneration: Imp (SigLIP + Phi-2 / Phi-3 / Qwen1.5), LLaVA-KD (SigLIP + Qwen),
    # LLaVA-1.5 (CLIP + Llama), LLaVA-Gemma (CLIP + Gemma); the connector is mlp2x_gelu.
    "llava": Family(
        name="llava",
        title="LLaVA (`LlavaForConditionalGeneration`)",
        architectures=("LlavaForConditionalGeneration",),
        load="edgelmm.models.lmm:load_llava",
        graphs=VISION_GRAPHS,
        vision="edgelmm.models.vision:LlavaVision",
        vision_wrapper="tower hidden state at `vision_feature_layer` (-1, -2 or a list), CLS dropped under the"
        " `default` strategy, then the projector (mlp2x_gelu)",
        placeholder="`<image>` -> one image token per visual token",
        towers=("clip_vision_model", "siglip_vision_model"),
        language_models=("llama", "qwen2", "phi", "phi3", "gemma"),
        verified_by=("llava-clip-llama", "llava-siglip-qwen2", "llava-siglip-phi", "llava-siglip-phi3",
                     "llava-clip-gemma"),
        notes="CLIP: shortest-edge resize + centre crop; SigLIP: squash. Phi-2's lm_head bias has no place in"
        " LlavaForConditionalGeneration (transformers drops it on load too)",
    ),
    # Idefics3ForConditionalGeneration (HuggingFaceM4/Idefics3-8B-Llama3): SigLIP-style NaViT tower + pixel shuffle.
    "idefics3": Family(
        name="idefics3",
        title="Idefics3 (`Idefics3ForConditionalGeneration`)",
        architectures=("Idefics3ForConditionalGeneration",),
        load="edgelmm.models.idefics3:load_idefics3",
        graphs=VISION_GRAPHS,
        vision="edgelmm.models.vision:Idefics3Vision",
        vision_wrapper="one tile per batch row: tower (full patch mask) -> pixel-shuffle connector",
        placeholder="`<image>` -> per tile `<fake_token_around_image><row_r_col_c>` + image tokens, rows end in"
        " `\\n`, then `<global-img>` + the overview tile",
        language_models=("llama",),
        verified_by=("idefics3",),
        notes="image splitting as transformers does it (tiles + overview)",
    ),
    # SmolVLMForConditionalGeneration (HuggingFaceTB/SmolVLM-256M/500M-Instruct, SmolVLM2 images): Idefics3's layout.
    "smolvlm": Family(
        name="smolvlm",
        title="SmolVLM (`SmolVLMForConditionalGeneration`)",
        architectures=("SmolVLMForConditionalGeneration",),
        load="edgelmm.models.idefics3:load_smolvlm",
        graphs=VISION_GRAPHS,
        vision="edgelmm.models.vision:Idefics3Vision",
        vision_wrapper="as Idefics3",
        placeholder="as Idefics3",
        language_models=("llama",),
        verified_by=("smolvlm",),
        notes="images only (no video); this case encodes one tile per image, the idefics3 case splits",
    ),
    # Qwen2VLForConditionalGeneration (Qwen/Qwen2-VL-2B-Instruct).
    "qwen2-vl": Family(
        name="qwen2-vl",
        title="Qwen2-VL (`Qwen2VLForConditionalGeneration`)",
        architectures=("Qwen2VLForConditionalGeneration",),
        load="edgelmm.models.qwen2_vl:load_qwen2_vl",
        graphs=VISION_GRAPHS,
        vision="edgelmm.models.vision:Qwen2VLVision",
        vision_wrapper="one image per call at a fixed grid: patchify (temporal x2) inside the graph, rotary and"
        " attention spans precomputed for that grid, then the patch merger",
        placeholder="`<|image_pad|>` -> one image token per merged patch",
        positions="mrope",
        fixed_grid=True,
        verified_by=("qwen2-vl",),
        notes="one image size per bundle (`--image-size`, default 448 px): images are squashed to it, where"
        " transformers picks a grid per aspect ratio (the same for square images)",
    ),
    # Qwen2_5_VLForConditionalGeneration (Qwen/Qwen2.5-VL-3B-Instruct): windowed vision attention, RMSNorm tower.
    "qwen2.5-vl": Family(
        name="qwen2.5-vl",
        title="Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`)",
        architectures=("Qwen2_5_VLForConditionalGeneration",),
        load="edgelmm.models.qwen2_vl:load_qwen2_vl",
        graphs=VISION_GRAPHS,
        vision="edgelmm.models.vision:Qwen2VLVision",
        vision_wrapper="as Qwen2-VL, plus the window order and window spans precomputed for the grid",
        placeholder="as Qwen2-VL",
        positions="mrope",
        fixed_grid=True,
        verified_by=("qwen2.5-vl",),
        notes="as Qwen2-VL",
    ),
    # Any decoder-only *ForCausalLM: a text-only bundle (no vision_encoder).
    "causal-lm": Family(
        name="causal-lm",
        title="decoder-only LM (`*ForCausalLM`)",
        architectures=(),
        load="edgelmm.models.lmm:load_causal_lm",
        graphs=(GraphRole.TOKEN_EMBEDDING, GraphRole.DECODER),
        verified_by=("causal-lm",),
        inputs="2 prompts",
        notes="text only; SmolLM2-135M with real weights in tests/export/test_real_weights.py",
    ),
}

# Architectures users ask for that cannot be exported yet, and why (one line each).
UNSUPPORTED: dict[str, str] = {
    "LlavaNextForConditionalGeneration": "anyres tiling with image_newline embeddings and per-image grids",
    "LlavaOnevisionForConditionalGeneration": "anyres tiling with image_newline embeddings and per-image grids",
    "PaliGemmaForConditionalGeneration": "prefix-LM attention (bidirectional over image + prompt) needs a"
    " non-causal decoder mask",
    "Gemma3ForConditionalGeneration": "bidirectional attention over image tokens and sliding-window layers",
    "Idefics2ForConditionalGeneration": "the perceiver resampler connector has not been verified",
    "Qwen3VLForConditionalGeneration": "DeepStack visual features are injected into decoder layers, which the"
    " three-graph split does not carry",
    "MllamaForConditionalGeneration": "cross-attention image layers inside the decoder",
}


def family_for(architecture: str, *, where: str = "") -> Family:
    """The family that handles ``architecture`` (a config.json architectures entry)."""
    for family in FAMILIES.values():
        if architecture in family.architectures:
            return family
    if architecture.endswith("ForCausalLM"):
        return FAMILIES["causal-lm"]
    place = f" in '{where}'" if where else ""
    if architecture in UNSUPPORTED:
        reason = UNSUPPORTED[architecture]
        raise UnsupportedModelError(f"architecture '{architecture}'{place} cannot be exported: {reason}")
    known = ", ".join(a for f in FAMILIES.values() for a in f.architectures)
    raise UnsupportedModelError(f"architecture '{architecture}'{place} cannot be exported: it is in no edgelmm family;"
                                f" supported are {known} and decoder-only *ForCausalLM models")


def check_model_types(family: Family, vision: str, text: str) -> None:
    """Refuse a tower or language model (config ``model_type``) the family was not verified with."""
    if family.towers and vision not in family.towers:
        raise UnsupportedModelError(f"{family.title} with a '{vision}' vision tower cannot be exported:"
                                    f" supported towers are {', '.join(family.towers)}")
    if family.language_models and text not in family.language_models:
        raise UnsupportedModelError(
            f"{family.title} with a '{text}' language model is not supported: verified language models are"
            f" {', '.join(family.language_models)} (a new one needs a parity case in {PARITY_TEST})"
        )


def check_transformers(family: Family, installed: str) -> None:
    """Refuse a transformers version outside the family's verified range, naming the supported versions."""
    if not version_in(installed, family.transformers):
        raise UnsupportedModelError(
            f"transformers {installed} is installed, but edgelmm exports {family.title} only with transformers"
            f" {family.transformers} (the versions it was verified with):"
            f" pip install 'transformers{family.transformers}'"
        )


def version_in(version: str, spec: str) -> bool:
    """``version`` satisfies a comma-separated spec of >=, <, ==, != clauses (numeric release parts only)."""
    have = _release(version)
    ops = {">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b}
    for clause in spec.split(","):
        op, bound = re.fullmatch(r"\s*(>=|<=|==|!=|<|>)\s*([\d.]+)\s*", clause).groups()
        want = _release(bound)
        width = max(len(have), len(want))
        if not ops[op](have + (0,) * (width - len(have)), want + (0,) * (width - len(want))):
            return False
    return True


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(p) for p in match.group(0).split(".")) if match else (0,)


def get(name: str) -> Family:
    return lookup(FAMILIES, name, what="model family")


README_BEGIN = "<!-- support table: generated by `edgelmm export --families`; do not edit -->"
README_END = "<!-- end of support table -->"


def support_table() -> str:
    """The README's support table (markdown), generated from FAMILIES."""
    rows = [f"Verified how: each case of `{PARITY_TEST}` builds a tiny random model (hidden 32, 2 layers) with its"
            " processor, exports it, and checks that the bundle's greedy 16 tokens equal transformers' `generate`,"
            " that the runtime's prompt ids, pixel values and image features (and M-RoPE positions) equal"
            " transformers', and that every graph is within the tolerance table of `export/validate.py`.", "",
            "| family | graphs | precisions | verified how | notes |", "|---|---|---|---|---|"]
    for family in FAMILIES.values():
        scope = []
        if family.towers:
            scope.append("towers: " + ", ".join(t.removesuffix("_vision_model") for t in family.towers))
        if family.language_models:
            scope.append("LMs: " + ", ".join(family.language_models))
        if family.positions != "linear":
            scope.append(f"{family.positions} positions")
        title = "<br>".join([family.title, *scope])
        verified = f"{family.inputs}: " + ", ".join(f"`{case}`" for case in family.verified_by)
        graphs = ", ".join(str(g) for g in family.graphs)
        rows.append(f"| {title} | {graphs} | {', '.join(str(p) for p in family.precisions)} | {verified} |"
                    f" {family.notes} |")
    return "\n".join(rows)

"""Export recipes: one YAML file says how a model becomes a bundle for one kind of device.

    export/smol-vqa/arm64-int4.yaml --load_recipe--> ExportRecipe --edgelmm export --recipe--> bundle + accuracy table

A recipe names the model, a precision per graph (a preset name or one QuantSpec per graph), a visual-token budget,
static shapes for NPUs, calibration data (real samples of the model's own built-in dataset) and what the export
re-checks on the finished bundle. Loading is strict: unknown keys, wrong types, unknown names and empty calibration
data are all reported at once, before any model is built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgelmm import strict_yaml
from edgelmm.errors import BadInputError, SpecError
from edgelmm.export.quantize import GRAPH_PRESETS, GraphPrecisions
from edgelmm.export.visual_tokens import VisualBudget
from edgelmm.registry import lookup
from edgelmm.specs import SPEC, from_dict

RECIPES_DIR = Path(__file__).resolve().parents[3] / "export"
"""The shipped recipes (``export/<model>/<variant>.yaml`` in the repository)."""
TEXT_SETS = ("sklearn-descr",)
"""Fixed text sets for the decoder's teacher-forced agreement (export/accuracy.py)."""


@dataclasses.dataclass(**SPEC)
class CalibrationSpec:
    """Real samples (image + question) that static QDQ ranges are calibrated on."""

    dataset: str
    """A built-in dataset (``edgelmm eval`` / training datasets: shapes, digits...)."""
    split: str = "train"
    samples: int = 16

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise SpecError(f"calibration.samples must be >= 1, got {self.samples} (static QDQ needs real samples)")


@dataclasses.dataclass(**SPEC)
class ValidationSpec:
    """What the export re-checks on the finished bundle (besides the per-graph parity it always runs)."""

    text_set: str = "sklearn-descr"
    """Fixed text for decoder top-1 agreement with the fp32 torch model (teacher-forced)."""
    tokens: int = 512
    """Tokens of the text set used (more: a finer agreement figure, a slower export)."""
    task: str | None = None
    """An eval task (``edgelmm eval --task``) to score the whole bundle on through the runtime; None skips it."""
    split: str = "test"
    samples: int = 50

    def __post_init__(self) -> None:
        problems = []
        if self.text_set not in TEXT_SETS:
            problems.append(f"validation.text_set '{self.text_set}' is not valid; valid: {', '.join(TEXT_SETS)}")
        if not 16 <= self.tokens <= 8192:
            problems.append(f"validation.tokens must be in [16, 8192], got {self.tokens}")
        if self.samples < 1:
            problems.append(f"validation.samples must be >= 1, got {self.samples}")
        if problems:
            raise SpecError("; ".join(problems))


@dataclasses.dataclass(**SPEC)
class ExportRecipe:
    name: str
    """``<model>/<variant>``, the path of the file under export/ without .yaml."""
    model: str
    """Registry name or local model directory."""
    description: str = ""
    preset: str | None = None
    """A named precision plan (GRAPH_PRESETS: cpu-fp32, arm64-int8, arm64-int4, qnn-a16w8); or give ``precision``."""
    precision: GraphPrecisions | None = None
    """One QuantSpec per graph (vision_encoder, token_embedding, decoder); or name a ``preset``."""
    budget: VisualBudget = VisualBudget()
    static_shapes: bool = False
    """Batch 1, fixed image size, fixed max context with an in-place KV buffer: what NPU compilers (QNN HTP) need."""
    max_context: int | None = None
    """Prompt + generated tokens (a static-shape decoder allocates exactly this)."""
    calibration: CalibrationSpec | None = None
    """Required when any graph is static QDQ (a8w8 / a16w8)."""
    validation: ValidationSpec = ValidationSpec()

    def __post_init__(self) -> None:
        problems = []
        if (self.preset is None) == (self.precision is None):
            problems.append("give exactly one of preset (a name) or precision (per graph)")
        elif self.preset is not None:
            try:
                lookup(GRAPH_PRESETS, self.preset, what="precision preset")
            except BadInputError as exc:  # UnknownNameError, listing the valid names
                problems.append(str(exc))
        if self.max_context is not None and self.max_context < 2:
            problems.append(f"max_context must be >= 2, got {self.max_context}")
        if self.static_shapes and self.max_context is None:
            problems.append("static_shapes needs max_context (the KV buffer is allocated at that size)")
        if problems:
            raise SpecError("; ".join(problems))
        if self.graphs.static and self.calibration is None:
            raise SpecError("a static QDQ precision (a8w8 / a16w8) needs calibration: {dataset, split, samples}")

    @property
    def graphs(self) -> GraphPrecisions:
        """The precision of each graph (the preset's, or the explicit one)."""
        return self.precision if self.precision is not None else GRAPH_PRESETS[self.preset]()


def parse_recipe(data: object, *, where: str = "recipe") -> ExportRecipe:
    """An ExportRecipe from parsed YAML; every problem in one SpecError. (Dataset and task names are checked by
    edgelmm.evals.export_checks, which knows those registries.)"""
    return from_dict(ExportRecipe, data, where=where)


def load_recipe(path: str | Path) -> ExportRecipe:
    """Read ``path`` (a YAML file, or a shipped recipe name such as ``smol-vqa/arm64-int4``)."""
    path = Path(path)
    if not path.is_file() and (RECIPES_DIR / f"{path}.yaml").is_file():
        path = RECIPES_DIR / f"{path}.yaml"
    if not path.is_file():
        shipped = ", ".join(list_recipes())
        raise SpecError(f"no export recipe at '{path}'; shipped: {shipped}")
    data = strict_yaml.load(path.read_bytes(), where=str(path), error=SpecError)
    return parse_recipe(data, where=str(path))


def list_recipes() -> list[str]:
    """Names of the shipped recipes (``<model>/<variant>``)."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml"))

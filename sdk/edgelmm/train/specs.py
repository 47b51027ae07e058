"""Training specs (stdlib only, so `edgelmm train --dry-run` never imports torch).

A recipe is a tuple of StageSpecs: each says which component trains how (full / lora / frozen), which losses, on
which data, for how many optimizer steps at which learning rate. Stages are data: printing them is the dry run.
"""

from __future__ import annotations

import dataclasses

from edgelmm.errors import SpecError
from edgelmm.specs import SPEC, Trainability

COMPONENTS = ("vision_tower", "connector", "llm")
FORMATS = ("contrastive", "ground", "caption", "qa", "item-text", "item-chat")
"""item-text / item-chat: the ilm recipe's phases (its Q-Former is the "vision_tower", its adaptor the "connector")."""


@dataclasses.dataclass(**SPEC)
class LoraSpec:
    """Low-rank adapters (peft LoraConfig) on the LM's linear layers."""

    r: int = 16
    alpha: int = 32
    """Scale of the update is alpha / r."""
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Module names (suffixes) that get adapters; the Llama family's attention and MLP projections by default."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise SpecError(f"lora: need r >= 1, alpha > 0, 0 <= dropout < 1 and target modules; got {self}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclasses.dataclass(**SPEC)
class ComponentTraining:
    """How each component trains in one stage (torchtune's TrainableParams per component)."""

    vision_tower: Trainability = Trainability.FROZEN
    connector: Trainability = Trainability.FROZEN
    llm: Trainability = Trainability.FROZEN

    def __post_init__(self) -> None:
        if self.connector == Trainability.LORA:
            raise SpecError("connector: lora is not supported (the connector is two small linear layers: train it full)")

    def items(self) -> tuple[tuple[str, Trainability], ...]:
        return tuple((name, getattr(self, name)) for name in COMPONENTS)

    @property
    def uses_lora(self) -> bool:
        return any(t == Trainability.LORA for _, t in self.items())

    def __str__(self) -> str:
        return " ".join(f"{name}={t}" for name, t in self.items())


@dataclasses.dataclass(**SPEC)
class DataSource:
    """One dataset of a stage's mixture."""

    dataset: str
    """A key of edgelmm.train.data.DATASETS."""
    weight: float = 1.0
    """Relative share of the stage's examples."""
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise SpecError(f"data weight must be > 0, got {self.weight} for '{self.dataset}'")


@dataclasses.dataclass(**SPEC)
class LossTerm:
    """A named loss of edgelmm.train.losses.LOSSES and its weight in the stage's total."""

    name: str
    weight: float = 1.0


@dataclasses.dataclass(**SPEC)
class StageSpec:
    """One training stage."""

    name: str
    trainability: ComponentTraining
    losses: tuple[LossTerm, ...]
    data: tuple[DataSource, ...]
    format: str
    """What the stage feeds the model: "contrastive" (image vs caption embeddings: the tower alone), "ground"
    (image -> per-visual-token word targets: tower + connector, no LM forward), "caption"
    (image -> caption, loss on the caption) or "qa" (image + question -> answer, loss on the answer only)."""
    steps: int
    """Optimizer steps (each of batch_size * grad_accum examples, over all processes)."""
    lr: float
    batch_size: int
    """Examples per process per micro-step."""
    grad_accum: int = 1
    warmup: float = 0.05
    """Fraction of steps with linear warm-up; cosine decay to 0 after it."""
    weight_decay: float = 0.0
    lora: LoraSpec | None = None
    """Required when a component trains with lora."""
    connector_lr: float | None = None
    """Peak learning rate of the LLaVA connector when it should differ from ``lr`` (same schedule): LLaVA-style
    recipes give the small projector a higher rate than the LM's adapters (measured in docs/training.md)."""
    turns: int = 1
    """"qa" format: questions per image, as one multi-turn conversation (the example's question, then its
    ``more``); each answer is labelled. More answers per LM forward: the image and prompt are paid for once."""

    def __post_init__(self) -> None:
        problems = []
        if self.format not in FORMATS:
            problems.append(f"format '{self.format}' is not valid; valid: {', '.join(FORMATS)}")
        if self.turns < 1 or (self.turns > 1 and self.format != "qa"):
            problems.append(f"turns must be >= 1, and > 1 only for format qa; got {self.turns} for {self.format}")
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            problems.append(f"need steps >= 0, batch_size >= 1, grad_accum >= 1; got {self.steps}, "
                            f"{self.batch_size}, {self.grad_accum}")
        if self.connector_lr is not None and not self.connector_lr > 0:
            problems.append(f"connector_lr must be > 0 when set; got {self.connector_lr}")
        if not self.lr > 0 or not 0 <= self.warmup < 1:
            problems.append(f"need lr > 0 and 0 <= warmup < 1; got {self.lr}, {self.warmup}")
        if self.trainability.uses_lora and self.lora is None:
            problems.append("a component trains with lora but the stage has no lora spec")
        if not self.losses or not self.data:
            problems.append("a stage needs at least one loss and one data source")
        if all(t == "frozen" for _, t in self.trainability.items()):
            problems.append("every component is frozen: nothing would train")
        if problems:
            raise SpecError(f"stage '{self.name}': " + "; ".join(problems))

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def describe(self) -> str:
        """One block of text for --dry-run."""
        mix = ", ".join(f"{d.dataset}:{d.split} x{d.weight:g}" for d in self.data)
        losses = " + ".join(f"{t.weight:g}*{t.name}" for t in self.losses)
        lines = [
            f"stage {self.name}",
            f"  train      {self.trainability}" + (f" (lora r={self.lora.r} alpha={self.lora.alpha})" if self.lora else ""),
            f"  data       {self.format}" + (f" ({self.turns} turns)" if self.turns > 1 else "") + f": {mix}",
            f"  loss       {losses}",
            f"  schedule   {self.steps} steps x {self.batch_size} x {self.grad_accum} accum, lr {self.lr:g}"
            + (f" (connector {self.connector_lr:g})" if self.connector_lr else "") + ", "
            f"warm-up {self.warmup:.0%}, cosine, weight decay {self.weight_decay:g}",
        ]
        return "\n".join(lines)


@dataclasses.dataclass(**SPEC)
class EvalRequest:
    """An evaluation the recipe runs on its saved model (results go into provenance.json)."""

    task: str
    """A key of edgelmm.evals.TASKS."""
    split: str = "val"
    n: int = 200


@dataclasses.dataclass(**SPEC)
class DistillSpec:
    """A teacher whose outputs stages distil into the student (LLaVA-KD), and how the student is cut."""

    teacher: str
    """A registry model name or a trained model directory (`edgelmm train` output); run under no_grad."""
    student_layers: int
    """Decoder layers of the base model's LM the student keeps (its first N)."""
    temperature: float = 1.0
    """Softmax temperature of the MDist terms (LLaVA-KD's code: 1, i.e. none)."""

    def __post_init__(self) -> None:
        if not self.teacher or self.student_layers < 1 or not self.temperature > 0:
            raise SpecError(f"distill: need a teacher, student_layers >= 1 and temperature > 0; got {self}")


@dataclasses.dataclass(**SPEC)
class RecipeSpec:
    """A whole training run: what to start from, the stages in order, and the evaluations after."""

    name: str
    """A key of edgelmm.train.recipes.RECIPES: the code that builds each stage's module and data."""
    base_model: str
    """Registry model to start from (edgelmm.models.registry.MODELS); its tower and connector are re-initialised
    from ``seed``, its LM keeps its pretrained weights."""
    stages: tuple[StageSpec, ...]
    seed: int = 0
    """Initialises tower and connector, and picks which training examples the run sees."""
    evals: tuple[EvalRequest, ...] = ()
    distill: DistillSpec | None = None
    """Recipes that distil (llava-kd) name their teacher and student depth here; others leave it None."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if not names or len(set(names)) != len(names):
            raise SpecError(f"recipe '{self.name}': stages must be non-empty with unique names, got {names}")
        if self.seed < 0:
            raise SpecError(f"recipe '{self.name}': seed must be >= 0, got {self.seed}")

    def describe(self) -> str:
        head = f"recipe {self.name}: base model {self.base_model}, seed {self.seed}"
        if self.distill:
            d = self.distill
            head += f"\n  student    first {d.student_layers} LM layers; teacher {d.teacher}, temperature {d.temperature:g}"
        evals = ", ".join(f"{e.task}:{e.split} n={e.n}" for e in self.evals) or "none"
        return "\n".join([head, *(s.describe() for s in self.stages), f"evals {evals}"])

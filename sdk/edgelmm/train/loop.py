"""The shared step loop: optimizer, schedule, gradient accumulation, DDP, logging, checkpoints, resume, stop.

Every recipe stage is run by :func:`run_stage`. A stage brings a module whose ``forward(batch)`` returns named loss
terms, a batch source that can start at any optimizer step (data are deterministic by index, so a resumed run sees
exactly the batches it would have seen) and a snapshot of the tensors worth checkpointing; the loop does the rest.

Multi-process: run under ``torchrun``; each process takes its own slice of every step's examples and DDP averages
the gradients (gloo on CPU, nccl on CUDA). Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelmm.errors import TrainingError
from edgelmm.train import checkpoint, trainability
from edgelmm.train.specs import StageSpec

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.jsonl"


# ----------------------------------------------------------------------------------------------------------------
# Processes and devices


@dataclasses.dataclass(frozen=True, slots=True)
class Dist:
    """This process's place in the run (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; float32 on CPU (bf16 autocast is slower than fp32 on x86 CPUs without AMX)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on some rank."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average ``values`` over the ranks (what the log reports is the loss of the whole step, not rank 0's)."""
        if self.world == 1:
            return values
        names = sorted(values)
        tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return {n: float(v) / self.world for n, v in zip(names, tensor.tolist())}


def init_dist() -> Dist:
    """Read torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) and join the process group if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


# ----------------------------------------------------------------------------------------------------------------
# Stop requests (SIGINT / SIGTERM): finish the step, checkpoint, exit


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps. A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()


# ----------------------------------------------------------------------------------------------------------------
# The stage loop


@dataclasses.dataclass(slots=True)
class Stage:
    """What one stage brings to the loop."""

    spec: StageSpec
    index: int
    module: nn.Module
    """forward(batch) -> {loss name: scalar tensor}, at least the names in spec.losses."""
    batches: Callable[[int, int], Iterator[Any]]
    """batches(start_step, rank) -> micro-batches of this rank, in order, from optimizer step ``start_step``."""
    snapshot: Callable[[], dict[str, torch.Tensor]]
    """The tensors a checkpoint must hold to rebuild the run (everything trained so far, not frozen weights)."""


class Stopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised after the checkpoint when a stop was requested (signal, or the --stop-after-steps budget)."""

    def __init__(self, message: str, *, by_signal: bool) -> None:
        super().__init__(message)
        self.by_signal = by_signal


@dataclasses.dataclass(slots=True)
class RunContext:
    out: Path
    dist: Dist
    meta: dict[str, Any]
    """Written into every checkpoint's meta.json (recipe name, spec, seed...)."""
    checkpoint_every_s: float = 300.0
    progress: bool = True
    stop: StopFlag = dataclasses.field(default_factory=StopFlag)
    started: float = dataclasses.field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0
    """Seconds spent by earlier processes of a resumed run."""
    stop_after_steps: int | None = None
    """Checkpoint and stop after this many optimizer steps in this process (time-sliced or preemptible runs)."""
    steps_done: int = 0

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started


def lr_at(spec: StageSpec, step: int) -> float:
    """Linear warm-up over ``warmup * steps``, then cosine decay to zero (LLaVA / Imp's schedule)."""
    warm = max(1, round(spec.warmup * spec.steps))
    if step < warm:
        return spec.lr * (step + 1) / warm
    progress = (step - warm) / max(1, spec.steps - warm)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(spec: StageSpec, params: list[nn.Parameter], names: dict[int, str]) -> list[dict[str, Any]]:
    """One AdamW group, or two when ``spec.connector_lr`` is set: the connector's parameters (by name) get
    ``lr_scale = connector_lr / lr``, applied on top of the shared schedule in ``_steps``."""
    if spec.connector_lr is None:
        return [{"params": params, "lr_scale": 1.0}]
    connector = [p for p in params if trainability.CONNECTOR_MARK in names[id(p)]]
    rest = [p for p in params if trainability.CONNECTOR_MARK not in names[id(p)]]
    groups = [{"params": connector, "lr_scale": spec.connector_lr / spec.lr}, {"params": rest, "lr_scale": 1.0}]
    return [g for g in groups if g["params"]]


def run_stages(stages: tuple[StageSpec, ...], ctx: RunContext, resume: dict[str, Any] | None,
               make_stage: Callable[[StageSpec, int], Stage], after_stage: Callable[[], None] | None = None) -> None:
    """Run a recipe's stages in order from ``resume``'s (stage_index, step, optimizer) if any; ``make_stage(spec,
    index)`` builds each stage only when it runs (it may change which parameters train)."""
    resume = resume or {"stage_index": 0, "step": 0}
    for index, spec in enumerate(stages):
        if index < resume["stage_index"]:
            continue
        start = resume["step"] if index == resume["stage_index"] else 0
        optimizer = resume.get("optimizer") if index == resume["stage_index"] and start > 0 else None
        run_stage(make_stage(spec, index), ctx, start_step=start, optimizer_state=optimizer)
        if after_stage is not None:
            after_stage()


def run_stage(stage: Stage, ctx: RunContext, *, start_step: int = 0,
              optimizer_state: tuple[dict[str, torch.Tensor], dict] | None = None) -> None:
    """Train ``stage`` from optimizer step ``start_step`` to ``spec.steps``; checkpoint and log as it goes."""
    spec, dist = stage.spec, ctx.dist
    names = {id(p): n for n, p in stage.module.named_parameters() if p.requires_grad}
    params = [p for p in stage.module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"stage '{spec.name}' has no trainable parameters")
    optimizer = torch.optim.AdamW(param_groups(spec, params, names), lr=spec.lr, weight_decay=spec.weight_decay,
                                  betas=(0.9, 0.999))
    if optimizer_state is not None:
        checkpoint.restore_optimizer(optimizer, names, *optimizer_state)
    model: nn.Module = stage.module
    if dist.world > 1:
        model = nn.parallel.DistributedDataParallel(stage.module, find_unused_parameters=False)
    batches = prefetch(stage.batches(start_step, dist.rank))
    try:
        _steps(stage, ctx, model, optimizer, params, names, batches, start_step)
    finally:
        batches.close()
    if spec.steps == start_step:  # nothing ran (a resumed run at a stage boundary): still mark the stage done
        save_checkpoint(stage, ctx, spec.steps, optimizer, names)


def _steps(stage: Stage, ctx: RunContext, model: nn.Module, optimizer: torch.optim.Optimizer, params: list,
           names: dict[int, str], batches: Iterator[Any], start_step: int) -> None:
    spec, dist = stage.spec, ctx.dist
    log = JsonlLog(ctx.out / LOG_FILE) if dist.main else None
    bar = _progress(spec, start_step, ctx)
    last_save = time.perf_counter()
    for step in range(start_step, spec.steps):
        t0 = time.perf_counter()
        lr = lr_at(spec, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        terms, examples, tokens = _accumulate(model, spec, batches, dist)
        grad_norm = float(nn.utils.clip_grad_norm_(params, 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"stage": spec.name, "stage_index": stage.index, "step": step + 1, "lr": lr,
                  "loss": terms.pop("loss"), "terms": terms, "grad_norm": grad_norm,
                  "examples": examples * dist.world, "tokens": tokens * dist.world,
                  "step_s": time.perf_counter() - t0, "elapsed_s": ctx.elapsed}
        if log:
            log.write(record)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", s_step=f"{record['step_s']:.2f}")
        ctx.steps_done += 1
        by_signal = dist.any(ctx.stop.event.is_set())
        stop = by_signal or ctx.steps_done == ctx.stop_after_steps
        due = time.perf_counter() - last_save > ctx.checkpoint_every_s
        if stop or step + 1 == spec.steps or dist.any(due):
            save_checkpoint(stage, ctx, step + 1, optimizer, names)
            last_save = time.perf_counter()
        if stop:
            if bar:
                bar.close()
            raise Stopped(f"stopped after step {step + 1} of stage '{spec.name}' (checkpoint saved); "
                          f"continue with: edgelmm train --resume {ctx.out}", by_signal=by_signal)
    if bar:
        bar.close()


def _accumulate(model: nn.Module, spec: StageSpec, batches: Iterator[Any], dist: Dist) -> tuple[dict[str, float], int, int]:
    """Forward/backward over grad_accum micro-batches; returns averaged loss terms, examples and tokens seen."""
    sums: dict[str, float] = {}
    examples = tokens = 0
    for micro in range(spec.grad_accum):
        batch = next(batches)
        if hasattr(batch, "to"):
            batch = batch.to(dist.device)
        sync = micro == spec.grad_accum - 1 or not isinstance(model, nn.parallel.DistributedDataParallel)
        with (contextlib.nullcontext() if sync else model.no_sync()), dist.autocast():
            terms = model(batch)
            missing = [t.name for t in spec.losses if t.name not in terms]
            if missing:
                raise TrainingError(f"stage '{spec.name}': the model computed no {', '.join(missing)}")
            loss = sum(t.weight * terms[t.name] for t in spec.losses)
        (loss / spec.grad_accum).backward()
        for name, value in {"loss": loss, **terms}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) / spec.grad_accum
        examples += int(getattr(batch, "size", None) or len(getattr(batch, "pixel_values", [])))
        tokens += int(getattr(batch, "tokens", 0))
    sums = dist.mean(sums)
    if not math.isfinite(sums["loss"]):
        raise TrainingError(f"stage '{spec.name}': loss is {sums['loss']} (diverged); lower the learning rate")
    return sums, examples, tokens


def save_checkpoint(stage: Stage, ctx: RunContext, step: int, optimizer: torch.optim.Optimizer,
                    names: dict[int, str]) -> None:
    """Rank 0 writes ``<out>/checkpoint`` atomically: trained tensors, optimizer state, position in the run."""
    if ctx.dist.main:
        opt_tensors, opt_scalars = checkpoint.optimizer_tensors(optimizer, names)
        meta = checkpoint.checkpoint_meta(**ctx.meta, stage_index=stage.index, stage=stage.spec.name, step=step,
                                          world_size=ctx.dist.world, optimizer_scalars=opt_scalars,
                                          elapsed_s=ctx.elapsed)
        checkpoint.save(ctx.out / CHECKPOINT_DIR, stage.snapshot(), meta, optimizer=opt_tensors)
    ctx.dist.barrier()


def _progress(spec: StageSpec, start: int, ctx: RunContext) -> Any:
    if not (ctx.progress and ctx.dist.main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=spec.steps, initial=start, desc=spec.name, unit="step", dynamic_ncols=True, mininterval=2.0)


# ----------------------------------------------------------------------------------------------------------------
# Logs


class JsonlLog:
    """One JSON object per line, flushed per write (a killed run keeps every finished step)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(path: Path, stage_index: int, step: int) -> None:
    """Drop records after (stage_index, step): a resumed run redoes those steps and logs them again."""
    records = [r for r in read_log(path) if (r["stage_index"], r["step"]) <= (stage_index, step)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# Prefetching


def prefetch(iterator: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Produce the next ``depth`` items on a background thread (image drawing and tokenizing overlap compute).

    Closing the generator (or leaving the loop by an exception) stops and joins the thread, so no producer is left
    running torch code while the interpreter shuts down.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)
        put(done)

    thread = threading.Thread(target=work, daemon=True, name="edgelmm-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)

"""Checkpoints: safetensors tensors + a JSON meta file, written atomically. Nothing is ever unpickled.

A checkpoint is a directory::

    model.safetensors       trained tensors by name
    optimizer.safetensors   optimizer state flattened to tensors (only in resumable checkpoints)
    meta.json               schema_version, format, and whatever the writer records (step, stage, config...)

Writes go through edgelmm.atomic.staged_dir (hidden sibling, fsync, renameat2 exchange, meta.json written last),
so a process killed mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edgelmm.errors import BundleError

SCHEMA_VERSION = 1
FORMAT = "edgelmm-train-checkpoint"
META = "meta.json"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"


def save(directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
         optimizer: dict[str, torch.Tensor] | None = None, files: dict[str, str] | None = None) -> Path:
    """Write ``directory`` atomically: tensors, optional optimizer state, ``meta`` (JSON) and extra text ``files``.

    ``meta`` is written as given; :func:`checkpoint_meta` makes the meta of a resumable training checkpoint.
    """
    from edgelmm.atomic import staged_dir

    directory = Path(directory)
    with staged_dir(directory, force=True) as stage:  # hidden sibling, fsynced, swapped in: never half-written
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(stage / MODEL))
        if optimizer is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in optimizer.items()}, str(stage / OPTIMIZER))
        for name, text in (files or {}).items():
            (stage / name).write_text(text)
        (stage / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")  # the completeness marker
    return directory


def checkpoint_meta(**fields: Any) -> dict[str, Any]:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, **fields}


def load_meta(directory: Path) -> dict[str, Any]:
    from edgelmm.meta_json import read_versioned

    return read_versioned(Path(directory) / META, fmt=FORMAT, version=SCHEMA_VERSION, what="a training checkpoint",
                          missing=f"'{directory}' is not a checkpoint: {META} is missing")


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint directory."""
    meta = load_meta(directory)
    return load_file(str(Path(directory) / MODEL)), meta


def load_optimizer(directory: Path) -> dict[str, torch.Tensor] | None:
    path = Path(directory) / OPTIMIZER
    return load_file(str(path)) if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------------
# torch.optim state <-> flat tensors


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state to ``{"<param name>/<key>": tensor}`` plus the JSON-able scalars.

    ``names`` maps id(parameter) -> parameter name, so the state reloads by name even if parameter order changes.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                name = f"{names[id(param)]}/{key}"
                if torch.is_tensor(value):
                    tensors[name] = value
                else:
                    scalars[name] = value
    return tensors, scalars


def restore_optimizer(optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor],
                      scalars: dict) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            prefix = f"{names[id(param)]}/"
            # AdamW keeps "step" on the CPU unless capturable/fused; the moments live with the parameter.
            state = {k[len(prefix):]: v if k.endswith("/step") else v.to(param.device)
                     for k, v in tensors.items() if k.startswith(prefix)}
            state.update({k[len(prefix):]: v for k, v in scalars.items() if k.startswith(prefix)})
            if state:
                optimizer.state[param] = state

"""Trained LMM weights without the LM: vision tower + connector + LoRA deltas, on top of a registry LM.

A weights directory (what ``edgelmm train`` writes as ``<out>/model`` and what ships as ``smol-vqa``)::

    model.safetensors   model.vision_tower.*  model.multi_modal_projector.*  (LLaVA state-dict names)
                        <linear path>.lora_A [r, in]  <linear path>.lora_B [out, r]  (LoRA of the LM)
                        model.language_model.*  lm_head.*  (a fully trained LM: distilled students)
    meta.json           format, base LM, vision config, LoRA r/alpha, dtype; lm_layers (optional: the base LM
                        cut to its first N decoder layers, models/student.py)
    provenance.json     how it was made: command, seed, git commit, data versions, eval results (optional)

Loading assembles the LLaVA from the base LM and the vision config, loads tower and connector, and merges each
LoRA delta into its Linear (W += alpha / r * B @ A), so the result is a plain ``LlavaForConditionalGeneration``.
When the LM is the registry LM plus LoRA (no full LM tensors, no ``lm_layers``), ``LoadedModel.lora`` also keeps
the LoRA tensors and the unmerged base weights: quantized exports run the LoRA as a float side path beside the
quantized base weights instead of rounding the merged deltas away (export/lora_graph.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import SiglipVisionConfig

from edgelmm.errors import BundleError
from edgelmm.models.loaded import LoadedModel, LoraAdapters

FORMAT = "edgelmm-lmm-weights"
SCHEMA_VERSION = 1
SHIPPED = Path(__file__).resolve().parent / "weights"
"""Weights that ship inside the package (package data): SHIPPED / <model name>."""
TRAINED_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")
LM_PREFIXES = ("model.language_model.", "lm_head.")


def is_weights_dir(directory: Path) -> bool:
    return (Path(directory) / "meta.json").is_file() and (Path(directory) / "model.safetensors").is_file()


def read_meta(directory: Path) -> dict[str, Any]:
    from edgelmm.meta_json import read_versioned

    return read_versioned(Path(directory) / "meta.json", fmt=FORMAT, version=SCHEMA_VERSION, what="trained weights",
                          missing=f"'{directory}' holds no trained weights: meta.json is missing")


def load_weights(directory: str | Path, *, name: str | None = None) -> LoadedModel:
    """A weights directory -> LoadedModel (float32, eval, LoRA merged: a plain LlavaForConditionalGeneration)."""
    from edgelmm.models.lmm import assemble_llava
    from edgelmm.models.registry import build_model

    directory = Path(directory)
    meta = read_meta(directory)
    try:
        tensors = load_file(str(directory / "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"'{directory / 'model.safetensors'}' cannot be read: {exc}") from None
    lm = build_model(meta["base_lm"])
    if meta.get("lm_layers"):
        from edgelmm.models.student import truncate_lm

        truncate_lm(lm, int(meta["lm_layers"]))
    loaded = assemble_llava(name=name or meta.get("name", directory.name), lm=lm, seed=0,
                            vision_config=SiglipVisionConfig(**meta["vision_config"]))
    model = loaded.model
    trained = {k: v.float() for k, v in tensors.items() if k.startswith(TRAINED_PREFIXES)}
    missing = [k for k in model.state_dict() if k.startswith(TRAINED_PREFIXES) and k not in trained]
    if missing:
        raise BundleError(f"'{directory}' lacks {len(missing)} tower/connector tensors, e.g. {missing[0]}")
    lm_tensors = {k: v.float() for k, v in tensors.items()
                  if k.startswith(LM_PREFIXES) and not k.endswith((".lora_A", ".lora_B"))}  # LoRA merges below
    if lm_tensors:  # a fully trained LM replaces the base LM's weights, all of them
        lm_missing = [k for k, _ in model.named_parameters() if k.startswith(LM_PREFIXES) and k not in lm_tensors]
        if lm_missing:
            raise BundleError(f"'{directory}' holds a partial LM: {len(lm_missing)} tensors missing, e.g. {lm_missing[0]}")
    model.load_state_dict(trained | lm_tensors, strict=False)
    import dataclasses

    lora = meta.get("lora")
    if lora:  # the base LM is the registry's only without full LM tensors and without truncation
        keep = not lm_tensors and not meta.get("lm_layers")
        loaded = attach_lora(loaded, tensors, scale=float(lora["alpha"]) / float(lora["r"]), keep=keep)
    model.eval()
    loaded = dataclasses.replace(loaded, lm_trained=bool(lm_tensors or lora), weights_dir=directory)
    if meta.get("tools"):  # a tool-selection model: its choice set travels to the bundle's manifest
        loaded = dataclasses.replace(loaded, tools=tuple(meta["tools"]))
    return loaded


def attach_lora(loaded: LoadedModel, tensors: dict[str, torch.Tensor], *, scale: float,
                keep: bool = True) -> LoadedModel:
    """Merge the LoRA in ``tensors`` into ``loaded.model`` (in place) and, with ``keep``, record it unmerged.

    ``tensors``: ``<linear path>.lora_A`` [r, in] / ``.lora_B`` [out, r] (other keys are ignored). Returns the model
    with ``lm_trained`` set and ``lora`` holding A, B, the scale and a copy of each adapted base weight."""
    import dataclasses

    pairs = {k[: -len(".lora_A")]: (v.float(), tensors.get(k[: -len(".lora_A")] + ".lora_B"))
             for k, v in tensors.items() if k.endswith(".lora_A")}
    adapters = None
    if keep and pairs:
        modules = dict(loaded.model.named_modules())
        base = {p: modules[p].weight.detach().clone() for p in pairs
                if isinstance(modules.get(p), torch.nn.Linear)}  # merge_lora below rejects the others
        adapters = LoraAdapters(scale=scale, a={p: a for p, (a, _) in pairs.items()},
                                b={p: b.float() for p, (_, b) in pairs.items() if b is not None}, base=base)
    merge_lora(loaded.model, tensors, scale=scale)
    return dataclasses.replace(loaded, lm_trained=loaded.lm_trained or bool(pairs), lora=adapters)


@torch.no_grad()
def merge_lora(model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, scale: float) -> int:
    """Add ``scale * B @ A`` to the weight of every Linear that has ``<path>.lora_A`` / ``<path>.lora_B``.

    Returns how many Linears were merged. Raises BundleError when a path does not name a Linear of ``model``.
    """
    modules = dict(model.named_modules())
    merged = 0
    for key, a in tensors.items():
        if not key.endswith(".lora_A"):
            continue
        path = key[: -len(".lora_A")]
        linear = modules.get(path)
        b = tensors.get(f"{path}.lora_B")
        if not isinstance(linear, torch.nn.Linear) or b is None:
            raise BundleError(f"LoRA tensor '{key}' does not match a Linear of the model (or lora_B is missing)")
        delta = b.float() @ a.float()
        if delta.shape != linear.weight.shape:
            raise BundleError(f"LoRA '{path}': B @ A is {tuple(delta.shape)}, the weight is {tuple(linear.weight.shape)}")
        linear.weight += scale * delta.to(linear.weight.dtype)
        merged += 1
    return merged

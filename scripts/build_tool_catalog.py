"""Build sdk/edgelmm/train/data/tool_catalog.json from transformers' pipeline catalog (run when transformers moves).

    PYTHONPATH=sdk python scripts/build_tool_catalog.py            # rewrite the shipped catalog
    PYTHONPATH=sdk python scripts/build_tool_catalog.py --check    # exit 1 if the shipped file is out of date

Every task of ``transformers.pipelines.SUPPORTED_TASKS`` becomes one tool group:

- ``description``: the first sentences of the pipeline class docstring that say what it does (markdown links and
  backticks removed); where the docstring has none (fill-mask), a one-line description of ours, marked as such.
- ``ids``: the task name, the default checkpoint transformers pairs with it (a Hugging Face model id, the kind of
  tool name MLLM-Tool uses), transformers' own aliases (``TASK_ALIASES``) and synonyms of ours (``SYNONYMS``), each
  with its source. Every id of a group is the same tool: an instruction that needs the group accepts any of them.

Plus ``unknown``: the answer for requests no tool serves (MLLM-Tool's "Unknown" class).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "sdk" / "edgelmm" / "train" / "data" / "tool_catalog.json"

SYNONYMS: dict[str, tuple[str, ...]] = {
    # edgelmm's own alternative names, so that many instructions have several valid answers (the paper's
    # "identical tools"); short, lower-case, no quotes (they are decoded inside a JSON string)
    "audio-classification": ("sound-classifier",),
    "automatic-speech-recognition": ("speech-to-text", "transcriber"),
    "text-to-audio": ("speech-synthesis",),
    "feature-extraction": ("text-embedding",),
    "text-classification": ("text-classifier",),
    "token-classification": ("entity-tagger",),
    "table-question-answering": ("table-qa",),
    "document-question-answering": ("document-qa", "docvqa", "document-reader"),
    "fill-mask": ("masked-lm",),
    "text-generation": ("text-writer",),
    "zero-shot-classification": ("open-label-text-classifier",),
    "zero-shot-image-classification": ("open-label-image-classifier", "clip-classifier"),
    "zero-shot-audio-classification": ("open-label-audio-classifier",),
    "image-classification": ("image-classifier", "image-recognition"),
    "image-feature-extraction": ("image-embedding",),
    "image-segmentation": ("segmenter", "panoptic-segmentation"),
    "image-text-to-text": ("visual-question-answering", "image-captioning", "vlm"),
    "object-detection": ("object-detector", "detr"),
    "zero-shot-object-detection": ("open-vocabulary-detector", "owl-vit"),
    "decision": ("decision-maker",),
    "depth-estimation": ("depth-estimator", "monocular-depth"),
    "video-classification": ("video-classifier",),
    "mask-generation": ("segment-anything", "sam"),
    "keypoint-matching": ("keypoint-matcher", "image-matching"),
    "any-to-any": ("omni-model",),
}
NO_DOCSTRING = {
    "fill-mask": "Masked language modeling pipeline: predicts the words that fill the masked tokens of a text.",
}
"""Descriptions of ours where the class docstring says nothing about the task (it documents arguments only)."""


def describe(doc: str) -> str | None:
    """The first paragraph of a pipeline docstring, cleaned: at most three sentences, or None if it lists arguments."""
    first = doc.strip().split("\n\n")[0]
    if not first or first.lower().startswith(("arguments", "args")):
        return None
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(first.split()))  # [label](link) -> label
    text = text.replace("`", "").replace("**", "").replace("[", "").replace("]", "")
    sentences = re.split(r"(?<=\.)\s+", text)
    return " ".join(sentences[:3])


def _default(entry: dict) -> tuple[str, str] | None:
    """(model id, revision) of a task's default checkpoint, if it has one."""
    default = entry.get("default", {}).get("model")
    return tuple(default.get("pt") if isinstance(default, dict) else default or ()) or None


def build() -> dict:
    import transformers
    from transformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES

    tools = []
    defaults = [_default(entry) for entry in SUPPORTED_TASKS.values()]
    for task, entry in sorted(SUPPORTED_TASKS.items()):
        module, _, name = entry["impl"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        derived = describe(cls.__doc__ or "")
        default = _default(entry)
        ids = [{"id": task, "source": "transformers SUPPORTED_TASKS key"}]
        if default and defaults.count(default) == 1:  # a checkpoint that serves two tasks names neither tool
            ids.append({"id": default[0], "source": f"transformers default checkpoint (revision {default[1]})"})
        ids += [{"id": alias, "source": "transformers TASK_ALIASES"} for alias, target in sorted(TASK_ALIASES.items())
                if target == task]
        ids += [{"id": s, "source": "edgelmm synonym"} for s in SYNONYMS.get(task, ())]
        tools.append({
            "task": task,
            "input_type": entry["type"],
            "pipeline_class": entry["impl"],
            "description": derived or NO_DOCSTRING[task],
            "description_source": "pipeline class docstring" if derived else "edgelmm (docstring has no description)",
            "ids": ids,
        })
    tools.append({"task": "unknown", "input_type": "any", "pipeline_class": "",
                  "description": "No tool in this catalog serves the request.", "description_source": "edgelmm",
                  "ids": [{"id": "unknown", "source": "MLLM-Tool's Unknown class"}]})
    return {
        "schema_version": 1,
        "provenance": {"source": "transformers.pipelines.SUPPORTED_TASKS", "transformers": transformers.__version__,
                       "script": "scripts/build_tool_catalog.py"},
        "tools": tools,
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = parser.parse_args()
    text = render()
    if args.check:
        same = OUT.read_text() == text
        print("up to date" if same else f"{OUT} differs from what this transformers builds: rerun the script")
        return 0 if same else 1
    from edgelmm.atomic import write_file

    write_file(OUT, text.encode())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

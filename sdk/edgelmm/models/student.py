"""Distillation students (LLaVA-KD, arXiv 2410.16236): the teacher's architecture with a shallower LM.

LLaVA-KD initialises its student from three sources (shared/docs/methods.md section 2): the LM from the pretrained
checkpoint (here: the registry LM, truncated to its first N decoder layers), the vision tower copied from the
teacher, and a fresh connector. The result is a plain ``LlavaForConditionalGeneration`` that exports like any other.
"""

from __future__ import annotations

from edgelmm.errors import SpecError
from edgelmm.models.loaded import LoadedModel

SMOL_VQA_S_LAYERS = 7
"""Default depth of smol-vqa-s (of SmolLM2's 30): the deepest student whose exported int4 bundle decodes >= 2.5x
faster than smol-vqa's (measured with `edgelmm bench`, docs/distillation.md). Decode time is ~ head + N layers:
the 49k-row LM head costs about eight decoder layers, which is why the ratio is far from 30 / N."""


def truncate_lm(lm: LoadedModel, layers: int) -> LoadedModel:
    """Keep the first ``layers`` decoder layers of a causal LM (in place); embeddings, final norm and head stay.

    Works for the Llama-style ``*ForCausalLM`` layout (``model.layers``); config.num_hidden_layers follows, so the
    exporter sizes the KV cache for the kept layers.
    """
    model = lm.model
    total = int(model.config.num_hidden_layers)
    if not 1 <= layers <= total:
        raise SpecError(f"a student keeps 1..{total} decoder layers of '{lm.name}', got {layers}")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    return lm


def build_student(teacher: LoadedModel, lm: LoadedModel, *, layers: int, seed: int, name: str) -> LoadedModel:
    """The teacher's tower (copied) + a fresh connector (seeded) + ``lm`` truncated to ``layers`` decoder layers.

    The student must read the teacher's token ids (same tokenizer and vocabulary): distillation compares their
    logits position by position.
    """
    import torch

    from edgelmm.models.lmm import assemble_llava

    student = assemble_llava(name=name, vision_config=teacher.model.config.vision_config,
                             lm=truncate_lm(lm, layers), seed=seed)
    teacher_vocab = teacher.model.get_output_embeddings().weight.shape[0]
    student_vocab = student.model.get_output_embeddings().weight.shape[0]
    if teacher_vocab != student_vocab or student.image_token_id != teacher.image_token_id:
        raise SpecError(f"student '{name}' does not share the teacher's vocabulary ({student_vocab} vs {teacher_vocab}"
                        f" rows, image id {student.image_token_id} vs {teacher.image_token_id}): logits cannot be"
                        " compared")
    with torch.no_grad():
        student.model.model.vision_tower.load_state_dict(teacher.model.model.vision_tower.state_dict())
    return student


def build_smol_vqa_s(layers: int = SMOL_VQA_S_LAYERS) -> LoadedModel:
    """smol-vqa-s: smol-vqa's tower + a fresh connector + SmolLM2-135M-Instruct's first ``layers`` layers, untrained
    (train it with `edgelmm train --recipe llava-kd`)."""
    from edgelmm.models.lmm import build_smol_vqa
    from edgelmm.models.smollm2 import build_smollm2

    return build_student(build_smol_vqa(), build_smollm2(), layers=layers, seed=0, name="smol-vqa-s")

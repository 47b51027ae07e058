"""Imp's real sizes build on the meta device with the published parameter counts; they refuse to build for real."""

import pytest

from edgelmm.errors import UnsupportedModelError
from edgelmm.models.registry import MODELS, build_model

PHI2 = 2_779_683_840
"""microsoft/phi-2 (model card: 2.7B; this is the exact count of its checkpoint, LM head bias included)."""
SIGLIP_SO400M_VISION = 428_225_600
"""google/siglip-so400m-patch14-384 vision model: 27 layers + attention-pooling head + post layernorm."""
ONE_LAYER, POOLING_HEAD = 15_239_504, 15_238_352
"""Imp deletes the last encoder layer and the head (mm_vision_select_layer -2)."""
POSITIONS_384_MINUS_196 = (729 - 196) * 1152
"""Fewer patch positions at 196 px: smaller position embedding, nothing else changes."""


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name, tokens, tower", [
    ("imp-3b", 729, SIGLIP_SO400M_VISION - ONE_LAYER - POOLING_HEAD),
    ("imp-3b-196", 196, SIGLIP_SO400M_VISION - ONE_LAYER - POOLING_HEAD - POSITIONS_384_MINUS_196),
])
def test_imp_sizes_on_meta_device(name, tokens, tower):
    loaded = build_model(name, meta=True)
    model = loaded.model
    assert all(p.device.type == "meta" for p in model.parameters())
    assert loaded.num_image_tokens == tokens
    assert count(model.model.vision_tower) == tower
    assert count(model.model.language_model) + count(model.lm_head) == PHI2
    assert count(model.model.multi_modal_projector) == 1152 * 2560 + 2560 + 2560 * 2560 + 2560  # mlp2x_gelu


def test_architecture_only_entries_refuse_a_real_build():
    assert MODELS["imp-3b"].architecture_only
    with pytest.raises(UnsupportedModelError, match="architecture only"):
        build_model("imp-3b")

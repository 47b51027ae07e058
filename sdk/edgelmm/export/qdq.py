"""Static QDQ (a8w8 / a16w8) of one graph, calibrated on real samples run through the fp32 bundle itself.

    fp32 bundle (staged) --Pipeline--> calibration feeds per graph --quantize_static (MatMul/Gemm only)--> QDQ graph

Only MatMul/Gemm with a constant weight get QuantizeLinear/DequantizeLinear pairs: a whole-graph QDQ puts the
additive float32-min causal mask (and RMSNorm's Pow/ReduceMean) on a calibrated grid whose scale (~5e33) flattens
every real value (top-1 agreement 0.24 measured; shared/docs/pitfalls.md). Ranges are min-max over the samples.
Decoder feeds are prefills from an empty cache: every prompt token passes every layer, which is also what the
activation ranges of a decode step look like.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgelmm.errors import SpecError
from edgelmm.export.quantize import QuantSpec
from edgelmm.runtime.manifest import KVCacheSpec
from edgelmm.specs import GraphRole, Precision

MS_DOMAIN = "com.microsoft"
QDQ_OPSET = 21
"""Opset of static QDQ graphs: the first with 16-bit QuantizeLinear / DequantizeLinear in the standard domain."""
Feed = dict[str, np.ndarray]
Sample = tuple[Any, str]
"""(PIL image or None, prompt text): one calibration sample."""


def quantize_static_qdq(proto: onnx.ModelProto, spec: QuantSpec, feeds: Sequence[Feed]) -> onnx.ModelProto:
    """``proto`` with its constant-weight MatMul/Gemm in QDQ form at ``spec.precision`` (a8w8 or a16w8)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not spec.static:
        raise SpecError(f"static QDQ needs precision a8w8 or a16w8, not {spec.precision}")
    if not feeds:
        raise SpecError("static QDQ needs at least one calibration sample")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> Feed | None:
            return next(self._it, None)

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    proto = fuse_gelu(proto)
    _declare_opset(proto, QDQ_OPSET)
    activation = QuantType.QUInt16 if spec.precision is Precision.A16W8 else QuantType.QUInt8
    with tempfile.TemporaryDirectory(prefix="edgelmm-qdq-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(proto, str(src), save_as_external_data=True, location="in.onnx.data")
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=activation,
                        weight_type=QuantType.QUInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"],
                        use_external_data_format=True,
                        extra_options={"MatMulConstBOnly": True, "ActivationSymmetric": False,
                                       # one weight scale per output column: the tied LM head's rows span a wide range
                                       "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                                       "WeightSymmetric": False, "CalibTensorRangeSymmetric": False})
        return onnx.load(str(dst))


def fuse_gelu(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Exact GELU exported as Div/Erf/Add/Mul -> one Gelu node (onnxruntime's own fusion). Qualcomm HTP has no Erf:
    unfused, that one node would leave the graph and a strict (no CPU fallback) QNN session is refused."""
    from onnxruntime.transformers.fusion_gelu import FusionGelu
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(proto)
    FusionGelu(model).apply()
    model.prune_graph()
    fused = model.model
    if any(n.domain == MS_DOMAIN for n in fused.graph.node) and all(o.domain != MS_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def _declare_opset(proto: onnx.ModelProto, version: int) -> None:
    """Declare ai.onnx ``version`` without onnx's version converter. 16-bit QuantizeLinear needs opset 21, and the
    quantizer's own conversion asserts on contrib ops (SimplifiedLayerNormalization, GroupQueryAttention); opsets
    19-21 only widened the types of the ops our graphs use, so the declaration is all that changes."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < version:
            entry.version = version


def calibration_feeds(pipe: Any, samples: Sequence[Sample], roles: Sequence[GraphRole]) -> dict[GraphRole, list[Feed]]:
    """Inputs each graph of ``roles`` sees when the fp32 bundle ``pipe`` (a runtime Pipeline) runs ``samples``."""
    feeds: dict[GraphRole, list[Feed]] = {role: [] for role in roles}
    manifest = pipe.manifest
    for image, text in samples:
        images = [image] if image is not None and manifest.has_vision else []
        tiles = pipe.prepare_images(images) if images else []
        if GraphRole.VISION_ENCODER in feeds:
            feeds[GraphRole.VISION_ENCODER] += [{"pixel_values": t.pixels} for t in tiles]
        if GraphRole.DECODER in feeds:
            prompt = pipe.prompts.build(text, len(tiles), grids=[t.grid for t in tiles])
            features = pipe.encode_images(tiles) if tiles else None
            embeds = pipe.prompt_embeds(prompt, features)
            if manifest.kv_cache.layout == "static-buffer":  # one token per step: capture some of the steps
                feeds[GraphRole.DECODER] += _static_step_feeds(pipe.decoder, embeds)
            else:
                feeds[GraphRole.DECODER].append(prefill_feed(embeds, manifest.kv_cache))
    return feeds


STATIC_STEPS = 16
"""Steps of each prompt captured for a static-buffer decoder: positions 0 and 1 (the attention sink's outlier
activations clip if never calibrated), the last (a full past) and evenly spaced ones between, so the ranges see
what a whole prefill shows the shared-buffer graph's calibration. Each feed holds every KV buffer (~3 MB for
SmolLM2 at 64 positions), which is why not every step."""


def static_picks(length: int, steps: int = STATIC_STEPS) -> list[int]:
    """The positions of a ``length``-token prompt whose step inputs are captured (sorted, distinct)."""
    spread = np.linspace(0, length - 1, num=max(steps - 2, 1)).round().astype(int).tolist()
    return sorted({0, min(1, length - 1), length - 1, *spread})


def _static_step_feeds(decoder: Any, embeds: np.ndarray) -> list[Feed]:
    """Run ``embeds`` [1, S, hidden] through a StaticBufferDecoder, capturing the inputs of ``static_picks``."""
    picks = static_picks(embeds.shape[1])
    decoder.reset()
    feeds = []
    for t in range(picks[-1] + 1):
        if t in picks:
            feeds.append(decoder.next_feed(embeds[:, t : t + 1]))
        decoder.forward(embeds[:, t : t + 1])
    return feeds


def prefill_feed(embeds: np.ndarray, kv: KVCacheSpec) -> Feed:
    """Decoder inputs for a prefill of ``embeds`` float32 [1, S, hidden] from an empty cache, for either layout."""
    seq = embeds.shape[1]
    feed: Feed = {"inputs_embeds": embeds.astype(np.float32), "attention_mask": np.ones((1, seq), np.int64)}
    shared = kv.layout == "shared-buffer"
    past_len = seq if shared else 0  # a shared buffer must hold the new rows; past-present starts empty
    for i in range(kv.num_layers):
        for name in (kv.past_key, kv.past_value):
            feed[name.format(layer=i)] = np.zeros((1, kv.num_kv_heads, past_len, kv.head_dim), np.float32)
    if shared:
        feed["logits_to_keep"] = np.array(0, np.int64)
    else:  # linear positions (one row); multi-row schemes (M-RoPE) are refused before export starts
        feed["position_ids"] = np.arange(seq, dtype=np.int64)[None]
    return feed

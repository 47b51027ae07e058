"""int4 SmolLM2 against fp32: teacher-forced next-token agreement over a fixed 2,000-token English text.

The text is scikit-learn's dataset descriptions (iris, diabetes, digits, linnerud, wine, breast cancer DESCR strings,
concatenated in that order): fixed, offline, English prose with numbers and tables. Both bundles run through the
runtime's decoder over the same ids in 500-token chunks (chunked prefill of the shared KV buffer).
"""

import numpy as np
import pytest

from edgelmm.export.quantize import CORRECTION_SUFFIX
from edgelmm.runtime import Pipeline
from edgelmm.specs import GraphRole, Precision

pytestmark = pytest.mark.real_weights

TEXT_TOKENS = 2000
CHUNK = 500
AGREEMENT_FLOOR = 0.90  # the bar: int4 greedy agrees with fp32 on >= 90% of teacher-forced next tokens


def fixed_text() -> str:
    from sklearn import datasets

    names = ("load_iris", "load_diabetes", "load_digits", "load_linnerud", "load_wine", "load_breast_cancer")
    return "\n\n".join(getattr(datasets, n)().DESCR for n in names)


def teacher_forced_argmax(pipe: Pipeline, ids: np.ndarray) -> np.ndarray:
    """Greedy next token after every prefix of ``ids``: int64 [len(ids)]."""
    pipe.decoder.reset()
    pipe.decoder.reserve(len(ids))
    out = [pipe.decoder.forward(pipe.embed(ids[i : i + CHUNK]), all_logits=True).argmax(-1)
           for i in range(0, len(ids), CHUNK)]
    return np.concatenate(out)


def test_int4_agrees_with_fp32_on_90_percent_of_2000_teacher_forced_tokens(smollm2_bundle, smollm2_int4_bundle):
    fp32, int4 = Pipeline.load(smollm2_bundle, threads=2), Pipeline.load(smollm2_int4_bundle, threads=2)
    ids = np.asarray(fp32.tokenizer.encode_trusted(fixed_text())[:TEXT_TOKENS], np.int64)
    assert len(ids) == TEXT_TOKENS
    reference, quantized = teacher_forced_argmax(fp32, ids), teacher_forced_argmax(int4, ids)
    agreement = float((reference == quantized).mean())
    print(f"int4 vs fp32 teacher-forced next-token agreement over {TEXT_TOKENS} tokens: {agreement:.4f}")
    assert agreement >= AGREEMENT_FLOOR, f"int4/fp32 next-token agreement {agreement:.3f} < {AGREEMENT_FLOOR}"
    # fp32 itself is sane on this text: it predicts the actual next token often (a broken graph would not).
    assert float((reference[:-1] == ids[1:]).mean()) > 0.4


def test_int4_bundle_is_quantized_and_records_its_options(smollm2_bundle, smollm2_int4_bundle):
    import onnx

    pipe = Pipeline.load(smollm2_int4_bundle, threads=2)
    decoder = pipe.manifest.graphs[GraphRole.DECODER]
    assert decoder.precision is Precision.INT4 and pipe.manifest.kv_cache.layout == "shared-buffer"
    assert (decoder.options["bits"], decoder.options["block_size"], decoder.options["accuracy_level"]) == (4, 32, 4)
    assert "aarch64" in decoder.options["note"]
    embedding = pipe.manifest.graphs[GraphRole.TOKEN_EMBEDDING]
    assert embedding.precision is Precision.INT4 and embedding.options["quantizer"] == "GatherBlockQuantized"
    graph = onnx.load(str(smollm2_int4_bundle / "decoder.onnx"), load_external_data=False).graph
    # every projection is MatMulNBits, 4-bit but the 8-bit LM head; the other 8-bit ones are the two zero-point
    # corrections of each 4-bit projection (block sums, residuals)
    bits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in graph.node if n.op_type == "MatMulNBits"}
    four = [n for n, b in bits.items() if b == 4]
    eight = [n for n, b in bits.items() if b == 8 and CORRECTION_SUFFIX not in n]
    assert "MatMul" not in {n.op_type for n in graph.node} and len(four) == 4 * 30
    assert eight == ["/decoder/lm_head/MatMul_Q8"] and len(bits) == len(four) * 3 + 1
    assert decoder.options["lm_head_bits"] == 8
    assert decoder.options["method"] == "minmax" and decoder.options["zero_points"] == "int+block-sum correction"
    size = lambda b: sum(f.stat().st_size for f in b.glob("*.onnx*"))  # noqa: E731
    assert size(smollm2_int4_bundle) < 0.25 * size(smollm2_bundle)
    result = pipe.generate("What is the capital of France?", max_new_tokens=12)
    assert "Paris" in result.text

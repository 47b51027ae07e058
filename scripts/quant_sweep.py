"""Choose MatMulNBits defaults by measurement: block size x accuracy level -> decode tok/s and agreement with fp32.

Quantizes the fp32 decoder of an exported bundle (fast graph) once per setting, then for each: teacher-forced
next-token agreement with fp32 over the fixed 2,000-token text of tests/export/test_quantized_real_weights.py, and
decode speed (128-token prompt, 128 new tokens, 2 threads), interleaved over rounds (median). Quantized decoders
are kept in WORK (quantizing is slow and not timed: make them first with --prepare, niced):

    nice -n 19 python scripts/quant_sweep.py bundles/bench/smollm2-fp32 out/quant-sweep --prepare
    flock /tmp/edgelmm-timing.lock chrt -f 1 python scripts/quant_sweep.py bundles/bench/smollm2-fp32 out/quant-sweep 5
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from sklearn import datasets

from edgelmm.export.bundle import save_graph as save
from edgelmm.export.quantize import QuantSpec, quantize_decoder
from edgelmm.runtime.decoding import BoundEmbedding, SharedBufferDecoder
from edgelmm.runtime.manifest import load_bundle
from edgelmm.runtime.sessions import SessionConfig, session_options
from edgelmm.runtime.tokenizer import Tokenizer
from edgelmm.specs import Precision

SETTINGS = [("rtn-sym", 32, 4), ("rtn-asym", 32, 4), ("rtn-asym", 32, 0), ("rtn-asym", 64, 4), ("rtn-asym", 128, 4),
            ("rtn-asym", 16, 4), ("minmax-float", 32, 4), ("minmax", 32, 4), ("minmax", 64, 4), ("minmax", 16, 4)]
"""(method, block size, accuracy level); rtn-sym / rtn-asym: round to nearest without / with integer zero points;
minmax-float / minmax: min-max blocks with float zero points / integer zero points plus the block-sum correction.
Every setting keeps the LM head at 8 bits (QuantSpec.lm_head_bits)."""


def text_ids(tokenizer: Tokenizer, n: int = 2000) -> np.ndarray:
    names = ("load_iris", "load_diabetes", "load_digits", "load_linnerud", "load_wine", "load_breast_cancer")
    return np.asarray(tokenizer.encode_trusted("\n\n".join(getattr(datasets, m)().DESCR for m in names))[:n])


def main() -> None:
    bundle, work = Path(sys.argv[1]), Path(sys.argv[2])
    prepare = sys.argv[3:] == ["--prepare"]
    rounds = 3 if prepare or len(sys.argv) < 4 else int(sys.argv[3])
    manifest = load_bundle(bundle, check_hashes=False)
    kv, hidden = manifest.kv_cache, manifest.model.hidden_size
    tokenizer = Tokenizer(bundle / "tokenizer.json")
    ids = text_ids(tokenizer)
    options = session_options(SessionConfig(intra_op_threads=2))
    embed = ort.InferenceSession(str(bundle / "token_embedding.onnx"), options, providers=["CPUExecutionProvider"])
    one = BoundEmbedding(embed, hidden)
    table = embed.run(None, {"input_ids": ids[None]})[0]
    fp32 = None
    decoders = {}
    for method, block, level in [("fp32", 0, 0), *SETTINGS]:
        if block == 0:
            path = bundle / "decoder.onnx"
        else:
            path = work / f"{method}-b{block}-a{level}" / "decoder.onnx"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fp32 = fp32 or onnx.load(str(bundle / "decoder.onnx"))
                fresh = onnx.ModelProto()
                fresh.CopyFrom(fp32)  # the quantizer and the external-data writer both edit the proto in place
                spec = QuantSpec(precision=Precision.INT4, block_size=block, accuracy_level=level,
                                 method=method.removesuffix("-sym").removesuffix("-asym"),
                                 symmetric=method != "rtn-asym")
                save(quantize_decoder(fresh, spec), path)
        if prepare:
            continue
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        decoders[(method, block, level)] = SharedBufferDecoder(session, kv, hidden)

    def argmax_all(decoder: SharedBufferDecoder) -> np.ndarray:
        decoder.reset()
        decoder.reserve(len(ids))
        return np.concatenate([decoder.forward(table[:, i : i + 500], all_logits=True).argmax(-1)
                               for i in range(0, len(ids), 500)])

    def decode_speed(decoder: SharedBufferDecoder) -> float:
        decoder.reset()
        decoder.reserve(256)
        logits = decoder.forward(table[:, :128])
        start = time.perf_counter()
        for _ in range(127):
            logits = decoder.forward(one(int(np.argmax(logits))))
        return 127 / (time.perf_counter() - start)

    if prepare:
        return
    reference = argmax_all(decoders[("fp32", 0, 0)])
    speeds = {k: [] for k in decoders}
    for _ in range(rounds):
        for key, decoder in decoders.items():
            speeds[key].append(decode_speed(decoder))
    print("| method | block | accuracy level | decode tok/s (median) | agreement with fp32 |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for (method, block, level), decoder in decoders.items():
        agreement = float((argmax_all(decoder) == reference).mean())
        speed = statistics.median(speeds[(method, block, level)])
        rows.append({"method": method, "block_size": block, "accuracy_level": level, "decode_tok_s": speed,
                     "agreement": agreement})
        print(f"| {method} | {block or '-'} | {level if block else '-'} | {speed:.1f} | {agreement:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

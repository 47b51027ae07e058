#!/usr/bin/env bash
# `make bench-peers`: build the peers (own venv), convert SmolLM2-135M-Instruct for each, export edgelmm's bundles,
# then run the interleaved benchmark under the shared timing lock. Results: $OUT/table.md, results.json, chart.png.
# Env: PY (edgelmm's python, default .venv/bin/python), OUT (default out/bench-peers), ROUNDS (default 5),
#      REUSE_BUNDLES=1 keeps already exported edgelmm bundles, RT=1 runs the timed part under SCHED_FIFO (chrt -f 1;
#      root only): on a machine shared with niced jobs, 2-thread runs otherwise lose most barriers to them.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/bench-peers}
ROUNDS=${ROUNDS:-5}
CACHE=.cache/peers
PEERS=.venv-peers
BUNDLES=bundles/bench
HERE=scripts/bench_peers

"$HERE/setup.sh" "$PEERS" "$CACHE"
HF=$("$PY" -c "from edgelmm.models.smollm2 import hf_dir; print(hf_dir())")
nice -n 19 "$PEERS/bin/python" "$HERE/convert.py" "$HF" "$(ls "$CACHE"/sdist/llama_cpp_python-*.tar.gz)" "$CACHE/models"

export_bundle() {  # name, extra export flags...
  local name=$1; shift
  if [ "${REUSE_BUNDLES:-0}" = 1 ] && [ -f "$BUNDLES/$name/manifest.json" ]; then return; fi
  nice -n 19 "$PY" -m edgelmm export --model smollm2-135m --out "$BUNDLES/$name" --force "$@"
}
export_bundle smollm2-int4 --precision int4
export_bundle smollm2-int4-rtn --precision int4 --quant-method rtn
export_bundle smollm2-fp32 --precision fp32
export_bundle smollm2-fp32-past-present --precision fp32 --decoder-graph generic

mkdir -p "$OUT"
"$PY" "$HERE/prompt.py" "$BUNDLES/smollm2-int4/tokenizer.json" "$OUT/prompt_ids.json" 128
EDGE="\"$PY\", \"-m\", \"edgelmm.bench.peers\", \"drive\", \"--model\""
GENAI="\"$PEERS/bin/python\", \"$HERE/drive_genai.py\", \"--model\""
LLAMA="\"$PEERS/bin/python\", \"$HERE/drive_llamacpp.py\", \"--model\""
cat > "$OUT/systems.json" <<JSON
{"systems": [
  {"name": "edgelmm int4 (minmax, default)", "cmd": [$EDGE, "$BUNDLES/smollm2-int4"]},
  {"name": "edgelmm int4 rtn", "cmd": [$EDGE, "$BUNDLES/smollm2-int4-rtn"]},
  {"name": "onnxruntime-genai int4", "cmd": [$GENAI, "$CACHE/models/genai-int4"]},
  {"name": "llama.cpp Q4_0", "cmd": [$LLAMA, "$CACHE/models/smollm2-135m-q4_0.gguf"]},
  {"name": "edgelmm fp32", "cmd": [$EDGE, "$BUNDLES/smollm2-fp32"]},
  {"name": "onnxruntime-genai fp32", "cmd": [$GENAI, "$CACHE/models/genai-fp32"]},
  {"name": "edgelmm fp32 past-present (optimum-style)", "cmd": [$EDGE, "$BUNDLES/smollm2-fp32-past-present"]}
 ],
 "comparisons": [
  {"label": "int4 decode: edgelmm / onnxruntime-genai int4", "a": "edgelmm int4 (minmax, default)", "b": "onnxruntime-genai int4", "metric": "decode_tok_s", "target": ">= 1.0"},
  {"label": "int4 decode: edgelmm rtn / onnxruntime-genai int4", "a": "edgelmm int4 rtn", "b": "onnxruntime-genai int4", "metric": "decode_tok_s", "target": ">= 1.0"},
  {"label": "int4 decode: edgelmm / llama.cpp Q4_0", "a": "edgelmm int4 (minmax, default)", "b": "llama.cpp Q4_0", "metric": "decode_tok_s", "target": ">= 1.0 (goal)"},
  {"label": "int4 decode: edgelmm rtn / llama.cpp Q4_0", "a": "edgelmm int4 rtn", "b": "llama.cpp Q4_0", "metric": "decode_tok_s", "target": ">= 1.0 (goal)"},
  {"label": "int4 prefill: edgelmm / onnxruntime-genai int4", "a": "edgelmm int4 (minmax, default)", "b": "onnxruntime-genai int4", "metric": "prefill_tok_s", "target": ">= 1.0"},
  {"label": "int4 prefill: edgelmm rtn / onnxruntime-genai int4", "a": "edgelmm int4 rtn", "b": "onnxruntime-genai int4", "metric": "prefill_tok_s", "target": ">= 1.0"},
  {"label": "int4 prefill: edgelmm / llama.cpp Q4_0", "a": "edgelmm int4 (minmax, default)", "b": "llama.cpp Q4_0", "metric": "prefill_tok_s", "target": ""},
  {"label": "int4 prefill: edgelmm rtn / llama.cpp Q4_0", "a": "edgelmm int4 rtn", "b": "llama.cpp Q4_0", "metric": "prefill_tok_s", "target": ""},
  {"label": "fp32 decode: edgelmm / onnxruntime-genai fp32", "a": "edgelmm fp32", "b": "onnxruntime-genai fp32", "metric": "decode_tok_s", "target": ">= 1.0"},
  {"label": "fp32 decode: edgelmm shared buffer / past-present copying", "a": "edgelmm fp32", "b": "edgelmm fp32 past-present (optimum-style)", "metric": "decode_tok_s", "target": ">= 2.0"},
  {"label": "int4 peak RSS: edgelmm / onnxruntime-genai int4", "a": "edgelmm int4 (minmax, default)", "b": "onnxruntime-genai int4", "metric": "peak_rss_mb", "target": "<= 1.0"},
  {"label": "int4 peak RSS: edgelmm rtn / onnxruntime-genai int4", "a": "edgelmm int4 rtn", "b": "onnxruntime-genai int4", "metric": "peak_rss_mb", "target": "<= 1.0"}
 ]}
JSON
RT_PREFIX=()
if [ "${RT:-0}" = 1 ]; then RT_PREFIX=(chrt -f 1); fi
flock /tmp/edgelmm-timing.lock "${RT_PREFIX[@]}" "$PY" -m edgelmm.bench.peers run --systems "$OUT/systems.json" \
  --prompt-ids "$OUT/prompt_ids.json" --rounds "$ROUNDS" --new-tokens 128 --threads 2 --out "$OUT" \
  | tee "$OUT/table.md"

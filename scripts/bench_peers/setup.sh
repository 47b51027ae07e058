#!/usr/bin/env bash
# Build the peers edgelmm is compared with, in their own venv (never committed; everything comes from PyPI):
#   llama-cpp-python, compiled here for this CPU (GGML_NATIVE), and onnxruntime-genai with its model builder.
# The llama-cpp-python sdist is kept: its vendored llama.cpp holds convert_hf_to_gguf.py (the GGUF converter).
# Usage: scripts/bench_peers/setup.sh [VENV] [CACHE]   (defaults .venv-peers, .cache/peers). Idempotent.
set -euo pipefail
VENV=${1:-.venv-peers}
CACHE=${2:-.cache/peers}
LLAMA_CPP_PYTHON=0.3.36
ORT_GENAI=0.18.0
STAMP=$VENV/.peers-installed-$LLAMA_CPP_PYTHON-$ORT_GENAI
if [ -f "$STAMP" ]; then exit 0; fi
PY=$VENV/bin/python
python3 -m venv "$VENV"
$PY -m pip install -q --upgrade pip
$PY -m pip install -q torch==2.13.0  # first: the CPU build; anything that asks for torch later pulls CUDA otherwise
# The builder loads the HF model with transformers and quantizes with onnxruntime; same pins as edgelmm.
$PY -m pip install -q -c constraints.txt "onnxruntime-genai==$ORT_GENAI" onnxruntime transformers onnx numpy \
    safetensors sentencepiece protobuf onnx-ir
mkdir -p "$CACHE/sdist"
$PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$CACHE/sdist"
# No wheel exists: compile llama.cpp for this CPU (AVX-512 on the benchmark machine). ~30-60 min on 2 cores.
CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 19 \
    $PY -m pip install -q --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON"
touch "$STAMP"

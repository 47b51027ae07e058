#!/usr/bin/env bash
# Benchmark a bundle of this kit on this board (llama-bench style; the last stdout line is the JSON record):
#   ./bench.sh [BUNDLE] [--tests img,pp128,tg64,e2e] [--reps 5] [--threads N] [--save record.json] [--label TEXT]
# BUNDLE is a name under bundles/ (default: the first); the kit's profile is passed when it has one.
exec "$(dirname "${BASH_SOURCE[0]}")/edgelmm.sh" --kit bench "$@"

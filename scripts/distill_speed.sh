#!/usr/bin/env bash
# Decode and TTFT of smol-vqa (teacher) vs smol-vqa-s students at several depths, through exported int4 bundles.
# Interleaved rounds (teacher, students, teacher, ...), each one `edgelmm bench` process under the timing lock,
# 2 threads. Usage: scripts/distill_speed.sh OUT_DIR ROUNDS BUNDLE...   (records: OUT_DIR/<bundle>-<round>.json)
set -euo pipefail
out=$1; rounds=$2; shift 2
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for bundle in "$@"; do
    flock /tmp/edgelmm-timing.lock nice -n 0 env OMP_NUM_THREADS=2 python -m edgelmm bench --bundle "$bundle" \
      --tests tg64,e2e --threads 2 --reps 5 --json --label "$(basename "$bundle")" \
      > "$out/$(basename "$bundle")-$round.json"
  done
done

#!/usr/bin/env bash
# make arm-check: the linux-aarch64 kit on an emulated ARM64 Debian (qemu-user), token for token against x86.
#
#   make arm-check            (or: runtimes/linux-aarch64/arm_check.sh, as root, with .venv built)
#
# 1. host tools (qemu-user-static, binfmt-support, mmdebstrap) and the qemu-aarch64 binfmt handler;
# 2. a Debian bookworm arm64 root filesystem, cached under .cache/arm64/rootfs (git-ignored);
# 3. the bundles (SmolLM2 and smol-vqa), exported on x86 unless already there, and their x86 greedy answers;
# 4. the kit (build_kit.sh), copied into the root filesystem and installed there by its own scripts;
# 5. the same prompts on "aarch64": the generated token ids must equal the x86 ones; then a bench smoke run.
# Timings under emulation are meaningless and are never reported as device speed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
CACHE="${ARM_CHECK_CACHE:-$REPO/.cache/arm64}"
ROOTFS="$CACHE/rootfs"
BUNDLES="${ARM_CHECK_BUNDLES:-$REPO/bundles}"
SMOLLM2_PRECISION="${ARM_CHECK_SMOLLM2_PRECISION:-fp32}"  # int4 (accuracy level 0) once int4 export exists
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TOKENS=8  # emulated aarch64 runs ~1 s per decoder step on an idle 2-core host: enough tokens to compare
THREADS=2
START=$SECONDS

log() { echo "[arm-check $((SECONDS - START))s] $*" >&2; }
die() { echo "[arm-check] FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (binfmt_misc, chroot); run it as root or in a container"
[ -x "$PYTHON" ] || die "'$PYTHON' not found; run 'make venv' first (or set PYTHON)"

# -- 1. host tools -------------------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static > /dev/null || ! command -v mmdebstrap > /dev/null \
        || ! command -v update-binfmts > /dev/null; then
    log "installing qemu-user-static binfmt-support mmdebstrap"
    apt-get update -qq && apt-get install -y -qq qemu-user-static binfmt-support mmdebstrap > /dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2> /dev/null || true
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 2> /dev/null \
    || die "the qemu-aarch64 binfmt handler is not registered with the F (fix-binary) flag"

# -- 2. root filesystem ---------------------------------------------------------------------------------------
# mmdebstrap's extract variant unpacks the packages without running their maintainer scripts: the same files as
# a configured system for our purpose (python3, its venv module, libstdc++ for onnxruntime), in ~20 s instead of
# debootstrap's ~6-20 min of emulated dpkg configuration.
if [ ! -f "$ROOTFS/.edgelmm-rootfs" ]; then
    log "building the Debian bookworm arm64 root filesystem in $ROOTFS"
    rm -rf "$ROOTFS" "$ROOTFS.partial"
    mkdir -p "$CACHE"
    mmdebstrap --quiet --variant=extract --architectures=arm64 \
        --include=python3,python3-venv,libstdc++6,bash,coreutils bookworm "$ROOTFS.partial" "$MIRROR"
    touch "$ROOTFS.partial/.edgelmm-rootfs"
    mv "$ROOTFS.partial" "$ROOTFS"
fi
MACHINE="$(chroot "$ROOTFS" /usr/bin/python3 -c 'import platform; print(platform.machine())')"
[ "$MACHINE" = aarch64 ] || die "the root filesystem's python3 runs as '$MACHINE', not aarch64"

# -- 3. bundles and the x86 reference ---------------------------------------------------------------------------
SMOLLM2="$BUNDLES/smollm2-135m-$SMOLLM2_PRECISION"
VQA="$BUNDLES/smol-vqa"
export_bundle() {  # MODEL OUT [export options]
    local model="$1" out="$2"
    shift 2
    if [ ! -f "$out/manifest.json" ]; then
        log "exporting $model to $out"
        "$PYTHON" -m edgelmm export --model "$model" --out "$out" "$@" > /dev/null
    fi
}
export_bundle smollm2-135m "$SMOLLM2" --precision "$SMOLLM2_PRECISION"
export_bundle smol-vqa "$VQA"

WORK="$CACHE/work"
rm -rf "$WORK"
mkdir -p "$WORK"
cp "$REPO/demos/examples/scene.png" "$WORK/scene.png"
TEXT_PROMPT="Name three things people do with a phone."
VQA_PROMPT="What shapes and colours are in this picture?"
log "x86 reference answers ($TOKENS greedy tokens each)"
# The text check skips the chat template (--raw): its 30-token system prompt costs ~30 emulated decoder positions,
# and the template is plain Python (jinja2), not something aarch64 computes differently. smol-vqa keeps it.
"$PYTHON" -m edgelmm run --bundle "$SMOLLM2" --prompt "$TEXT_PROMPT" --raw --max-new-tokens "$TOKENS" \
    --threads "$THREADS" --json > "$WORK/x86-smollm2.json"
"$PYTHON" -m edgelmm run --bundle "$VQA" --image "$WORK/scene.png" --prompt "$VQA_PROMPT" \
    --max-new-tokens "$TOKENS" --threads "$THREADS" --json > "$WORK/x86-vqa.json"

# -- 4. the kit, installed in the root filesystem as on a board -----------------------------------------------------
log "building the kit"
PYTHON="$PYTHON" "$HERE/build_kit.sh" --bundle "$SMOLLM2" --bundle "$VQA" --out "$CACHE/kit"
KIT=/opt/edgelmm-kit
rm -rf "$ROOTFS$KIT" "$ROOTFS/opt/check"
mkdir -p "$ROOTFS/opt"
# Hard links where the cache and the root filesystem share a disk: the same files as a copy, without 1.3 GB of I/O.
cp -al "$CACHE/kit" "$ROOTFS$KIT" 2> /dev/null || cp -a "$CACHE/kit" "$ROOTFS$KIT"
cp -a "$WORK" "$ROOTFS/opt/check"

cleanup() { umount "$ROOTFS/proc" 2> /dev/null || true; }
trap cleanup EXIT
# /proc only: never bind /sys, onnxruntime's cpuinfo segfaults on the host's (it prints warnings without it).
mount -t proc proc "$ROOTFS/proc"
in_arm() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# -- 5. the same answers on aarch64 ----------------------------------------------------------------------------------
log "aarch64: installing the kit and answering (emulated: slow)"
in_arm "$KIT/run.sh" "$(basename "$SMOLLM2")" --prompt "$TEXT_PROMPT" --raw --max-new-tokens "$TOKENS" \
    --threads "$THREADS" --json > "$WORK/arm-smollm2.json" 2> "$WORK/arm-smollm2.log" \
    || { cat "$WORK/arm-smollm2.log" >&2; die "the kit's run.sh failed on aarch64"; }
in_arm "$KIT/run.sh" smol-vqa --image /opt/check/scene.png --prompt "$VQA_PROMPT" --max-new-tokens "$TOKENS" \
    --threads "$THREADS" --json > "$WORK/arm-vqa.json" 2> "$WORK/arm-vqa.log" \
    || { cat "$WORK/arm-vqa.log" >&2; die "the kit's run.sh failed on aarch64 (smol-vqa)"; }
log "aarch64: bench smoke run (timings discarded)"
in_arm "$KIT/bench.sh" smol-vqa --tests img,pp8,tg2 --reps 1 --warmup 0 --threads "$THREADS" --json \
    --label "qemu-user emulation: not device speed" > "$WORK/arm-bench.json" 2> "$WORK/arm-bench.log" \
    || { cat "$WORK/arm-bench.log" >&2; die "the kit's bench.sh failed on aarch64"; }

"$PYTHON" - "$WORK" <<'PY'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
failed = False
for name in ("smollm2", "vqa"):
    x86 = json.loads((work / f"x86-{name}.json").read_text())
    arm = json.loads((work / f"arm-{name}.json").read_text())
    same = x86["token_ids"] == arm["token_ids"]
    failed |= not same
    print(f"[arm-check] {name}: {'same' if same else 'DIFFERENT'} {len(arm['token_ids'])} tokens on aarch64 and x86: "
          f"{arm['text']!r}", file=sys.stderr)
    if not same:
        print(f"  x86:     {x86['token_ids']}\n  aarch64: {arm['token_ids']}", file=sys.stderr)
bench = json.loads((work / "arm-bench.json").read_text().splitlines()[-1])
rows = [row["test"] for row in bench["rows"]]
ok = bench["meta"]["arch"] == "aarch64" and rows == ["img", "pp8", "tg2"]
failed |= not ok
print(f"[arm-check] bench record from aarch64: arch {bench['meta']['arch']}, onnxruntime "
      f"{bench['meta']['onnxruntime_version']}, providers {sorted(set(bench['meta']['providers'].values()))}, "
      f"tests {rows}", file=sys.stderr)
sys.exit(1 if failed else 0)
PY
log "PASSED in $((SECONDS - START)) s"

#!/usr/bin/env bash
# Build a self-contained edgelmm kit for an ARM64 Linux board (Raspberry Pi 5, Snapdragon dev kits, ...):
#
#   runtimes/linux-aarch64/build_kit.sh --bundle bundles/smollm2-135m [--bundle bundles/smol-vqa] \
#       [--profile pi5-8gb|path.yaml] --out dist/edgelmm-kit [--tar]
#
# The kit holds the runtime-only edgelmm wheel (the base install is the runtime: no torch), every dependency as an
# aarch64 wheel at the versions of the Python that builds the kit (so the board runs the stack the host tested),
# the bundles, the profile, and the scripts edgelmm.sh / bench.sh / run.sh. Copy it to the board (scp -r, or the
# --tar file) and run ./bench.sh there; nothing is downloaded on the board.
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
PY_VERSION="${KIT_PYTHON_VERSION:-3.11}"   # Raspberry Pi OS and Debian bookworm ship Python 3.11
GLIBC_MINOR="${KIT_GLIBC_MINOR:-28}"        # manylinux_2_28: bookworm has glibc 2.36, Ubuntu 22.04 has 2.35
BUNDLES=()
PROFILE=""
OUT=""
TAR=0

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLES+=("${2:?--bundle needs a directory}"); shift 2 ;;
        --profile) PROFILE="${2:?--profile needs a name or a YAML file}"; shift 2 ;;
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --tar) TAR=1; shift ;;
        -h|--help) usage ;;
        *) echo "build_kit.sh: error: unknown argument '$1'" >&2; usage ;;
    esac
done
if [ ${#BUNDLES[@]} -eq 0 ] || [ -z "$OUT" ]; then usage; fi
for bundle in "${BUNDLES[@]}"; do
    [ -f "$bundle/manifest.json" ] || { echo "build_kit.sh: error: '$bundle' is not a bundle (no manifest.json)" >&2; exit 2; }
done
if [ -n "$PROFILE" ] && [ ! -f "$PROFILE" ]; then
    # A profile name resolves to the repository's device_profiles/<name>.yaml: the board has no repository.
    [ -f "$REPO/device_profiles/$PROFILE.yaml" ] || {
        echo "build_kit.sh: error: profile '$PROFILE' is neither a file nor device_profiles/$PROFILE.yaml" >&2; exit 2; }
    PROFILE="$REPO/device_profiles/$PROFILE.yaml"
fi

STAGE="$OUT.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE/wheels" "$STAGE/bundles"

echo "[kit] edgelmm wheel (runtime-only install requirements) from $REPO" >&2
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$STAGE/wheels" "$REPO" > "$STAGE/wheel-build.log" 2>&1 \
    || { cat "$STAGE/wheel-build.log" >&2; exit 1; }
rm "$STAGE/wheel-build.log"
WHEEL="$(ls "$STAGE"/wheels/edgelmm-*.whl)"

# Pin the runtime dependencies to the builder's versions: the board then runs the numbers the host checked
# (Pillow's resampling and onnxruntime's kernels change between releases).
"$PYTHON" - "$STAGE/constraints.txt" <<'PY'
import importlib.metadata as md
import sys

lines = []
for name in ("onnxruntime", "numpy", "pillow", "pyyaml", "tokenizers", "jinja2", "markupsafe", "rich"):
    try:
        lines.append(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY

# pip does not widen an explicit --platform to older glibc tags: list every manylinux_2_X the board accepts.
PLATFORMS=()
for minor in $(seq "$GLIBC_MINOR" -1 17); do
    PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64")
done
PLATFORMS+=(--platform manylinux2014_aarch64)
echo "[kit] aarch64 wheels for CPython $PY_VERSION (manylinux_2_$GLIBC_MINOR and older)" >&2
"$PYTHON" -m pip download --quiet --only-binary=:all: "${PLATFORMS[@]}" --python-version "$PY_VERSION" \
    --implementation cp --abi "cp${PY_VERSION/./}" --abi abi3 --abi none \
    --dest "$STAGE/wheels" --constraint "$STAGE/constraints.txt" "$WHEEL" rich >&2

NAMES=()
for bundle in "${BUNDLES[@]}"; do
    name="$(basename "$(cd "$bundle" && pwd)")"
    echo "[kit] bundle $name" >&2
    # Hard links on the same disk (exports replace bundles by renaming, never in place), else a copy.
    cp -al "$bundle" "$STAGE/bundles/$name" 2> /dev/null || cp -a "$bundle" "$STAGE/bundles/$name"
    NAMES+=("$name")
done
PROFILE_REL=""
if [ -n "$PROFILE" ]; then
    mkdir -p "$STAGE/profiles"
    cp "$PROFILE" "$STAGE/profiles/"
    PROFILE_REL="profiles/$(basename "$PROFILE")"
fi
cp "$HERE"/kit/*.sh "$HERE/kit/README.md" "$STAGE/"
chmod +x "$STAGE"/*.sh

COMMIT="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$COMMIT" != unknown ] && [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT="$COMMIT-dirty"
fi
KIT_ID="$(cd "$STAGE" && sha256sum wheels/*.whl | sha256sum | cut -c1-16)"
cat > "$STAGE/kit.env" <<ENV
# Written by build_kit.sh; read by edgelmm.sh, bench.sh and run.sh.
KIT_ID=$KIT_ID
KIT_GIT_COMMIT=$COMMIT
KIT_PYTHON_VERSION=$PY_VERSION
KIT_BUNDLES="${NAMES[*]}"
KIT_PROFILE="$PROFILE_REL"
ENV
(cd "$STAGE" && sha256sum wheels/*.whl > wheels/SHA256SUMS)

rm -rf "$OUT"
mv "$STAGE" "$OUT"
if [ "$TAR" = 1 ]; then
    tar -C "$(dirname "$OUT")" -cf "$OUT.tar" "$(basename "$OUT")"
    echo "[kit] $OUT.tar" >&2
fi
echo "[kit] $OUT: $(du -sh "$OUT" | cut -f1), bundles: ${NAMES[*]}, commit ${COMMIT:0:12}" >&2

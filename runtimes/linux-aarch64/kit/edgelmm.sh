#!/usr/bin/env bash
# edgelmm from this kit. The first call installs the kit's wheels into .venv (offline, ~1 minute), later calls
# start at once:   ./edgelmm.sh run --bundle bundles/NAME --prompt "Hello" --max-new-tokens 32
# bench.sh and run.sh call it as `edgelmm.sh --kit VERB [BUNDLE] ARGS...`: BUNDLE names a folder under bundles/
# (default: the first), and bench gets the kit's profile when it has one.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
. "$KIT/kit.env"
PYTHON="${PYTHON:-python3}"
VENV="${EDGELMM_KIT_VENV:-$KIT/.venv}"

die() { echo "edgelmm kit: error: $*" >&2; exit 2; }

install_kit() {
    command -v "$PYTHON" > /dev/null || die "'$PYTHON' not found; install Python $KIT_PYTHON_VERSION (apt install python3 python3-venv)"
    local arch version
    arch="$("$PYTHON" -c 'import platform; print(platform.machine())')"
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$arch" = aarch64 ] || die "this kit holds aarch64 wheels; this machine is $arch"
    [ "$version" = "$KIT_PYTHON_VERSION" ] || die "this kit holds wheels for Python $KIT_PYTHON_VERSION; '$PYTHON' is $version (set PYTHON=python$KIT_PYTHON_VERSION, or rebuild the kit with KIT_PYTHON_VERSION=$version)"
    echo "edgelmm kit: installing the wheels into $VENV (offline)" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed; install the venv module (apt install python3-venv)"
    # --no-compile: Python compiles what it imports on first use; compiling every module up front is slow.
    "$VENV/bin/python" -m pip install --quiet --no-index --no-compile --find-links "$KIT/wheels" \
        --disable-pip-version-check edgelmm rich >&2
    echo "$KIT_ID" > "$VENV/.kit-id"
}

if [ "${1:-}" = --kit ]; then
    verb="${2:?--kit needs a verb}"
    shift 2
    read -r -a names <<< "$KIT_BUNDLES"
    name="${names[0]}"
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
        name="$1"
        shift
    fi
    [ -d "$KIT/bundles/$name" ] || die "no bundle '$name'; this kit has: $KIT_BUNDLES"
    extra=()
    if [ "$verb" = bench ] && [ -n "$KIT_PROFILE" ]; then
        extra=(--profile "$KIT/$KIT_PROFILE")
    fi
    set -- "$verb" --bundle "$KIT/bundles/$name" "${extra[@]}" "$@"
fi

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.kit-id" 2>/dev/null)" != "$KIT_ID" ]; then
    install_kit
fi
# The wheel has no git metadata: bench records take the commit the kit was built from.
export EDGELMM_GIT_COMMIT="$KIT_GIT_COMMIT"
exec "$VENV/bin/python" -m edgelmm "$@"

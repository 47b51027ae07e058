#!/usr/bin/env bash
# Benchmark a bundle on an Android phone over adb and bring the bench record back:
#
#   runtimes/android-adb/bench_android.sh --bundle bundles/smol-vqa --out pixel8.json [-- --tests img,pp128,tg64,e2e]
#
# Options: --bundle DIR (builds a kit with ../linux-aarch64/build_kit.sh) or --kit DIR|TAR (a kit already built),
# --profile NAME|FILE, --serial SERIAL (default $ANDROID_SERIAL, or the only device), --out FILE (default
# record.json), --distro NAME (proot-distro alias, default debian), --port N (Termux sshd, default 8022).
# Arguments after -- go to `edgelmm bench`.
#
# The runner is the linux-aarch64 kit inside Termux's proot-distro Debian (README.md says why): adb pushes the kit
# to /sdcard/Download/edgelmm, `adb forward` reaches Termux's sshd, which unpacks the kit into the Debian home and
# runs bench.sh there; adb pulls the record back. One-time phone setup: README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ADB="${ADB:-adb}"
SSH="${SSH:-ssh}"
REMOTE_DIR=/sdcard/Download/edgelmm
BUNDLE=""
KIT=""
PROFILE=""
SERIAL="${ANDROID_SERIAL:-}"
OUT=record.json
DISTRO=debian
PORT=8022
BENCH_ARGS=()

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "bench_android.sh: error: $*" >&2; exit 2; }
log() { echo "[android] $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="${2:?--bundle needs a directory}"; shift 2 ;;
        --kit) KIT="${2:?--kit needs a directory or .tar}"; shift 2 ;;
        --profile) PROFILE="${2:?--profile needs a name or file}"; shift 2 ;;
        --serial) SERIAL="${2:?--serial needs a serial}"; shift 2 ;;
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --distro) DISTRO="${2:?--distro needs a proot-distro alias}"; shift 2 ;;
        --port) PORT="${2:?--port needs a number}"; shift 2 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        -h|--help) usage ;;
        *) die "unknown argument '$1' (bench options go after --)" ;;
    esac
done
if { [ -n "$BUNDLE" ] && [ -n "$KIT" ]; } || [ -z "$BUNDLE$KIT" ]; then
    die "give exactly one of --bundle or --kit"
fi
command -v "$ADB" > /dev/null || die "'$ADB' not found; install Android platform-tools (apt install adb)"

# -- the device -------------------------------------------------------------------------------------------------
pick_device() {
    local serials=() states=() serial state
    while read -r serial state _; do
        [ -n "$serial" ] || continue
        serials+=("$serial")
        states+=("$state")
    done < <("$ADB" devices | tail -n +2)
    [ ${#serials[@]} -gt 0 ] || die "no device in 'adb devices'; connect a phone with USB debugging enabled"
    if [ -z "$SERIAL" ]; then
        [ ${#serials[@]} -eq 1 ] || die "${#serials[@]} devices attached (${serials[*]}); choose one with --serial"
        SERIAL="${serials[0]}"
    fi
    for i in "${!serials[@]}"; do
        if [ "${serials[$i]}" = "$SERIAL" ]; then
            state="${states[$i]}"
            [ "$state" = device ] || die "device $SERIAL is '$state'$( [ "$state" = unauthorized ] && echo ': accept the USB debugging prompt on the phone')"
            return 0
        fi
    done
    die "device '$SERIAL' is not attached; attached: ${serials[*]}"
}
pick_device
adb_s() { "$ADB" -s "$SERIAL" "$@"; }
prop() { adb_s shell getprop "$1" | tr -d '\r'; }
ABI="$(prop ro.product.cpu.abi)"
[ "$ABI" = arm64-v8a ] || die "device $SERIAL is $ABI; the kit needs arm64-v8a"
DEVICE="$(prop ro.product.manufacturer) $(prop ro.product.model)"
SOC="$(prop ro.soc.model)"
ANDROID="$(prop ro.build.version.release)"
LABEL="$DEVICE${SOC:+ ($SOC)}, Android $ANDROID, Termux proot $DISTRO"
log "device $SERIAL: $LABEL"

# -- Termux over adb forward ----------------------------------------------------------------------------------------
TMP_TAR=""
cleanup() {
    adb_s forward --remove "tcp:$PORT" > /dev/null 2>&1 || true
    [ -z "$TMP_TAR" ] || rm -f "$TMP_TAR"
}
trap cleanup EXIT
adb_s forward "tcp:$PORT" tcp:8022 > /dev/null
termux() {  # run a bash command line inside the proot Debian, as Termux's sshd user
    "$SSH" -p "$PORT" -o StrictHostKeyChecking=accept-new -o BatchMode=yes localhost \
        "proot-distro login $DISTRO --bind /sdcard:/sdcard -- bash -c $(printf '%q' "$1")"
}
PY_VERSION="$(termux 'python3 -c "import sys; print(\"%d.%d\" % sys.version_info[:2])"' | tr -d '\r')" \
    || die "cannot reach Termux's sshd through adb forward tcp:$PORT (README.md: one-time phone setup)"
log "proot $DISTRO has Python $PY_VERSION"

# -- the kit --------------------------------------------------------------------------------------------------------
if [ -n "$BUNDLE" ]; then
    KIT="$REPO/.cache/android-kit/edgelmm-kit"
    args=(--bundle "$BUNDLE" --out "$KIT" --tar)
    [ -z "$PROFILE" ] || args+=(--profile "$PROFILE")
    KIT_PYTHON_VERSION="$PY_VERSION" "$REPO/runtimes/linux-aarch64/build_kit.sh" "${args[@]}"
    KIT="$KIT.tar"
fi
if [ -d "$KIT" ]; then
    [ -f "$KIT/kit.env" ] || die "'$KIT' is not a kit (no kit.env)"
    TMP_TAR="$(mktemp --suffix=.tar)"
    TAR="$TMP_TAR"
    tar -C "$(dirname "$KIT")" -cf "$TAR" "$(basename "$KIT")"
    KIT_NAME="$(basename "$KIT")"
else
    [ -f "$KIT" ] || die "kit '$KIT' does not exist"
    TAR="$KIT"
    KIT_NAME="$(tar -tf "$TAR" | head -1 | cut -d/ -f1)"
fi
log "pushing $(du -h "$TAR" | cut -f1) to $REMOTE_DIR"
adb_s shell mkdir -p "$REMOTE_DIR" > /dev/null
adb_s push "$TAR" "$REMOTE_DIR/kit.tar" > /dev/null

# -- run and collect ------------------------------------------------------------------------------------------------
# The kit lives in the Debian home, not on /sdcard: shared storage allows neither symlinks (venv) nor exec.
REMOTE_RECORD="$REMOTE_DIR/record.json"
printf -v QUOTED ' %q' --save "$REMOTE_RECORD" --label "$LABEL" "${BENCH_ARGS[@]}"
log "running bench.sh on the phone"
termux "rm -f $REMOTE_RECORD && mkdir -p ~/edgelmm && tar -xf $REMOTE_DIR/kit.tar -C ~/edgelmm \
&& ~/edgelmm/$KIT_NAME/bench.sh$QUOTED" >&2
adb_s pull "$REMOTE_RECORD" "$OUT" > /dev/null
log "bench record: $OUT"

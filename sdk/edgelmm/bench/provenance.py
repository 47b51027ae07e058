"""Where a benchmark ran: CPU, OS, versions and the git commit of the code (stdlib + onnxruntime only)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import onnxruntime as ort

from edgelmm import __version__

# /proc/cpuinfo on ARM names the core by implementer and part number only; these are the cores of the boards and
# phones we target (Arm's and Qualcomm's published MIDR values), so records say "Cortex-A76" rather than "0xd0b".
ARM_PARTS: dict[tuple[str, str], str] = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd05"): "Cortex-A55", ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd09"): "Cortex-A73", ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0d"): "Cortex-A77", ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd46"): "Cortex-A510", ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd48"): "Cortex-X2", ("0x41", "0xd4d"): "Cortex-A715", ("0x41", "0xd4e"): "Cortex-X3",
    ("0x41", "0xd80"): "Cortex-A520", ("0x41", "0xd81"): "Cortex-A720", ("0x41", "0xd82"): "Cortex-X4",
    ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x51", "0x001"): "Qualcomm Oryon",
}


def cpu_info(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """A human name for the CPU: x86 "model name", or ARM cores counted by type ("4x Cortex-A76").

    Under qemu-user an ARM process reads the x86 host's /proc/cpuinfo: the name then says so, since such a record's
    timings describe an emulator, not a device.
    """
    machine = machine or platform.machine()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return platform.processor() or platform.machine()
    fields: dict[str, list[str]] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("model name"):
        name = fields["model name"][0]
        emulated = fields.get("vendor_id") and machine.lower().startswith(("aarch64", "arm"))
        return f"{name} (x86 host seen from emulated {machine})" if emulated else name
    implementers, parts = fields.get("cpu implementer", []), fields.get("cpu part", [])
    if parts and len(implementers) == len(parts):
        counts: dict[str, int] = {}
        for impl, part in zip(implementers, parts):
            name = ARM_PARTS.get((impl.lower(), part.lower()), f"ARM {impl}/{part}")
            counts[name] = counts.get(name, 0) + 1
        return " + ".join(f"{n}x {name}" for name, n in counts.items())
    return (fields.get("hardware") or [platform.processor() or platform.machine()])[0]


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def git_commit() -> str:
    """The commit of the running edgelmm code: $EDGELMM_GIT_COMMIT (set by the device kits, which install a
    wheel), else ``git rev-parse HEAD`` of a source checkout (``-dirty`` when tracked files changed), else
    "unknown"."""
    if os.environ.get("EDGELMM_GIT_COMMIT"):
        return os.environ["EDGELMM_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return "unknown"
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def environment() -> dict[str, object]:
    """Machine and software fields of a bench record."""
    return {
        "edgelmm_version": __version__,
        "git_commit": git_commit(),
        "onnxruntime_version": ort.__version__,
        "python_version": platform.python_version(),
        "cpu_info": cpu_info(),
        "cpu_count": available_cpus(),
        "arch": platform.machine(),
        "os": platform.platform(terse=True),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

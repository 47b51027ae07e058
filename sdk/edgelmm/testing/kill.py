"""SIGKILL a writer midway, for interrupted-write tests (bundles, checkpoints).

    proc = sigkill_when([sys.executable, "-m", "edgelmm", "export", ...], lambda: any(tmp.glob(".b.partial-*/*.onnx")))

The test then asserts the previous output is intact and loadable and that no stage is mistaken for an output.
Checkpoint saves (issue 9) use the same helper with their own ``ready`` condition.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def sigkill_when(
    cmd: Sequence[str], ready: Callable[[], bool], *, timeout_s: float = 180.0, poll_s: float = 0.02
) -> subprocess.Popen:
    """Start ``cmd``, wait until ``ready()`` is true while it still runs, then SIGKILL it (no cleanup can run).

    Raises AssertionError if the process exits first or ``ready`` never becomes true: the test would prove nothing.
    """
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(
                    f"writer exited ({proc.returncode}) before it could be killed: "
                    f"{proc.stderr.read().decode(errors='replace')[-500:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"writer not ready to be killed within {timeout_s} s")
            time.sleep(poll_s)
        if proc.poll() is not None:
            raise AssertionError("writer finished before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"writer ended with {proc.returncode}, not by SIGKILL")
    return proc

"""onnxruntime sessions per graph role, recording the execution provider actually used."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edgelmm.errors import BundleIntegrityError, GraphRunError, ProviderError


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """Session options common to all graphs of one pipeline."""

    intra_op_threads: int = 0
    """0 lets onnxruntime choose (one per physical core)."""
    inter_op_threads: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class GraphSession:
    """One loaded graph and the provider it runs on."""

    session: ort.InferenceSession
    provider: str


def session_options(config: SessionConfig) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.intra_op_threads
    so.inter_op_num_threads = config.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # fatal only: its errors reach the user as one-line exceptions, not as stderr logs
    return so


def open_cpu_session(path: Path, config: SessionConfig) -> GraphSession:
    """Create a CPU session for ``path`` (already verified), turning onnxruntime failures into one-line errors."""
    try:
        session = ort.InferenceSession(str(path), session_options(config), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        message = str(exc).split("\n")[0][:200]
        if "protobuf" in message.lower() or "invalid" in message.lower() or "load model" in message.lower():
            raise BundleIntegrityError(f"graph '{path.name}' cannot be loaded by onnxruntime: {message}") from None
        raise ProviderError(f"CPUExecutionProvider failed to create a session for '{path.name}': {message}") from None
    return GraphSession(session=session, provider=session.get_providers()[0])


_ORT_ERRORS = tuple(
    getattr(_ort_state, name)
    for name in ("Fail", "InvalidArgument", "RuntimeException", "NotImplemented", "InvalidGraph", "EPFail",
                 "EngineError", "NoSuchFile")
    if hasattr(_ort_state, name)
)


@contextlib.contextmanager
def graph_errors(name: str) -> Iterator[None]:
    """Turn an onnxruntime failure while running graph ``name`` into a one-line GraphRunError naming the graph."""
    try:
        yield
    except (*_ORT_ERRORS, RuntimeError) as exc:
        message = str(exc).split("\n")[0][:300]
        raise GraphRunError(f"graph '{name}' failed while running: {message}") from None

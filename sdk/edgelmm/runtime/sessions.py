"""onnxruntime sessions per graph role, recording the execution provider actually used."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnxruntime as ort

from edgelmm.errors import BundleIntegrityError, ProviderError


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
    so.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
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

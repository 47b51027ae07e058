"""onnxruntime sessions per graph role: try a profile's providers in order and record the one actually used.

For each graph the fallback list is walked in order. A provider is skipped, with the reason kept, when it is not
installed, not available in this onnxruntime build, fails to create the session, takes no node of the graph, or
(``strict``) would leave some node to CPU. The first that works runs the graph; if none does, one ProviderError lists
every attempt. Placement is read back from onnxruntime (``session.record_ep_graph_assignment_info``), never assumed:
``get_providers()`` lists a registered provider even when no node runs on it.

QNN is a plug-in provider (onnxruntime-qnn): its library is registered with onnxruntime once per process and attached
with ``add_provider_for_devices``. The classic ``providers=[("QNNExecutionProvider", ...)]`` silently runs on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edgelmm.errors import BundleIntegrityError, GraphRunError, ProviderError
from edgelmm.runtime.profile import Provider, ProviderSpec, QnnBackend, QnnOptions

QNN_PACKAGE = "onnxruntime_qnn"
"""The plug-in's import name (tests point it elsewhere to simulate a machine without it)."""
_REGISTERED: set[str] = set()  # plug-in EP libraries registered with onnxruntime in this process
_REGISTER_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """Session options common to all graphs of one pipeline."""

    intra_op_threads: int = 0
    """0 lets onnxruntime choose (one per physical core)."""
    inter_op_threads: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class GraphSession:
    """One loaded graph, the provider it runs on, and what was tried before it."""

    session: ort.InferenceSession
    provider: str
    """onnxruntime name of the provider that took the graph (CPUExecutionProvider, QNNExecutionProvider...)."""
    skipped: tuple[str, ...] = ()
    """``"<provider>: <reason>"`` for each provider tried and skipped before ``provider``."""
    placement: dict[str, int] = dataclasses.field(default_factory=dict)
    """Nodes per provider after onnxruntime's partitioning (a partial placement shows CPU beside the provider)."""


def session_options(config: SessionConfig) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.intra_op_threads
    so.inter_op_num_threads = config.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # fatal only: its errors reach the user as one-line exceptions, not as stderr logs
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return so


def open_cpu_session(path: Path, config: SessionConfig) -> GraphSession:
    """Create a CPU session for ``path`` (already verified), turning onnxruntime failures into one-line errors."""
    return open_session(path, config, (ProviderSpec.cpu_default(),))


def open_session(path: Path, config: SessionConfig, providers: Sequence[ProviderSpec], *,
                 cache_key: str | None = None) -> GraphSession:
    """Walk ``providers`` in order for the graph at ``path``; return the first session that takes it.

    ``cache_key`` (the graph's sha256) names compiled-context caches (QNN ``context_cache``). Raises ProviderError
    listing every attempt when none works, BundleIntegrityError when onnxruntime cannot parse the graph at all.
    """
    skipped: list[str] = []
    for spec in providers:
        result = _attempt(path, config, spec, cache_key)
        if isinstance(result, GraphSession):
            return dataclasses.replace(result, skipped=tuple(skipped))
        skipped.append(f"{spec.provider.ort_name}: {result}")
    raise ProviderError(f"no execution provider could run '{path.name}'; tried: " + "; ".join(skipped))


def _attempt(path: Path, config: SessionConfig, spec: ProviderSpec, cache_key: str | None) -> GraphSession | str:
    """A session on ``spec``'s provider, or the reason it cannot be used."""
    provider = spec.provider
    so = session_options(config)
    providers: list[Any] | None
    model = path
    if provider is Provider.CPU:
        so.enable_cpu_mem_arena = spec.cpu.arena
        providers = ["CPUExecutionProvider"]
    elif provider is Provider.QNN:
        attached = _attach_qnn(so, spec.qnn)
        if isinstance(attached, str):
            return attached
        model = _qnn_context_cache(so, spec.qnn, path, cache_key) or path
        if model != path:
            result = _create(model, so, None, spec, path)
            if isinstance(result, GraphSession):
                return result
            model.unlink(missing_ok=True)  # a stale or broken cache (another QNN SDK, a killed write): rebuild it
            return _attempt(path, config, spec, cache_key)
        providers = None  # the plug-in is on the session options, CPU is appended by onnxruntime
    else:
        unavailable = _classic_unavailable(provider)
        if unavailable:
            return unavailable
        if provider is Provider.XNNPACK:
            # XNNPACK brings its own thread pool; onnxruntime's docs pair it with a single-threaded session pool.
            options = spec.xnnpack.ort_options(config.intra_op_threads or os.cpu_count() or 1)
            so.intra_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        else:
            options = spec.options.ort_options()
        providers = [(provider.ort_name, options)]
    return _create(model, so, providers, spec, path)


def _create(model: Path, so: ort.SessionOptions, providers: list[Any] | None, spec: ProviderSpec,
            path: Path) -> GraphSession | str:
    """The session, with its placement checked, or why it could not be made (``path``: the bundle's graph)."""
    provider = spec.provider
    if spec.strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        session = ort.InferenceSession(str(model), so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
        message = _first_line(exc)
        if provider is Provider.CPU and _is_unloadable(message):
            raise BundleIntegrityError(f"graph '{path.name}' cannot be loaded by onnxruntime: {message}") from None
        return f"session creation failed: {message}"
    placement = _placement(session)
    if provider is not Provider.CPU and placement and not placement.get(provider.ort_name):
        return f"took none of the graph's {sum(placement.values())} nodes (all would run on CPU)"
    return GraphSession(session=session, provider=provider.ort_name, placement=placement)


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip().split("\n")[0]
    return " ".join(text.split())[:limit]


def _is_unloadable(message: str) -> bool:
    lowered = message.lower()
    return "protobuf" in lowered or "invalid" in lowered or "load model" in lowered


def _placement(session: ort.InferenceSession) -> dict[str, int]:
    """Nodes per provider as partitioned by onnxruntime ({} when this onnxruntime cannot tell)."""
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except (AttributeError, RuntimeError):
        return {}
    counts: Counter[str] = Counter()
    for sub in subgraphs:
        counts[sub.ep_name] += len(sub.get_nodes())
    return dict(counts)


def _classic_unavailable(provider: Provider) -> str | None:
    """Why a built-in (non-plug-in) provider cannot be used here, or None."""
    if provider.ort_name in ort.get_available_providers():
        return None
    have = ", ".join(p.removesuffix("ExecutionProvider") for p in ort.get_available_providers())
    return f"not available in this onnxruntime {ort.__version__} build (it has: {have})"


def _ep_devices() -> list[Any]:
    get = getattr(ort, "get_ep_devices", None)
    return list(get()) if get else []


# ----------------------------------------------------------------------------------------------------------------
# QNN through the onnxruntime-qnn plug-in


def _qnn_module() -> Any | str:
    """The onnxruntime-qnn module, registered with onnxruntime once per process, or why it cannot be."""
    if importlib.util.find_spec(QNN_PACKAGE) is None:
        return ("onnxruntime-qnn is not installed (pip install 'edgelmm[qnn]'; wheels exist for Linux x86-64, where"
                " HTP is a simulator, and Windows)")
    if not hasattr(ort, "register_execution_provider_library"):
        return f"onnxruntime {ort.__version__} cannot load plug-in execution providers (needs >= 1.22)"
    module = importlib.import_module(QNN_PACKAGE)
    name = module.get_ep_name()
    with _REGISTER_LOCK:
        if name not in _REGISTERED:
            try:
                ort.register_execution_provider_library(name, module.get_library_path())
            except Exception as exc:  # noqa: BLE001 - "already registered" by the application is fine
                if "already registered" not in str(exc):
                    return f"registering the onnxruntime-qnn library failed: {_first_line(exc)}"
            _REGISTERED.add(name)
    return module


def _attach_qnn(so: ort.SessionOptions, options: QnnOptions) -> None | str:
    """Put the QNN plug-in on ``so`` with the profile's options, or return why it cannot be used."""
    module = _qnn_module()
    if isinstance(module, str):
        return module
    devices = [d for d in _ep_devices() if d.ep_name == module.get_ep_name()]
    if not devices:
        return "onnxruntime-qnn is registered but reports no device"
    backend = options.backend_path or _qnn_backend_path(module, options.backend)
    if not backend:
        return f"onnxruntime-qnn {_version(module)} ships no '{options.backend}' backend library"
    so.add_provider_for_devices(devices, {"backend_path": backend, **options.ort_options()})
    return None


def _qnn_backend_path(module: Any, backend: QnnBackend) -> str | None:
    getter = getattr(module, f"get_qnn_{backend.value}_path", None)
    path = getter() if getter else None
    return path if path and Path(path).is_file() else None


def _version(module: Any) -> str:
    info = getattr(module, "build_and_package_info", None)
    return getattr(info, "__version__", "?")


def cache_root() -> Path:
    """edgelmm's cache directory: ``$EDGELMM_CACHE``, default ``~/.cache/edgelmm``."""
    return Path(os.environ.get("EDGELMM_CACHE") or Path.home() / ".cache" / "edgelmm")


def _qnn_context_cache(so: ort.SessionOptions, options: QnnOptions, path: Path, key: str | None) -> Path | None:
    """With ``context_cache``: the compiled context model to load if a previous load wrote it, else arrange for this
    session to write it (onnxruntime's EPContext feature) and return None."""
    if not options.context_cache or key is None:
        return None
    tag = f"{key[:16]}-{options.backend}-soc{options.soc_model or 0}-arch{options.htp_arch or 0}-ort{ort.__version__}"
    context = cache_root() / "qnn-context" / f"{path.stem}-{tag}_ctx.onnx"
    if context.is_file():
        return context
    context.parent.mkdir(parents=True, exist_ok=True)
    so.add_session_config_entry("ep.context_enable", "1")
    so.add_session_config_entry("ep.context_embed_mode", "1")
    so.add_session_config_entry("ep.context_file_path", str(context))
    return None


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
        raise GraphRunError(f"graph '{name}' failed while running: {_first_line(exc, 300)}") from None

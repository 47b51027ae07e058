"""Device profiles: one YAML file per target device, loaded strictly into a frozen :class:`DeviceProfile`.

A phone user picks a profile, not onnxruntime session options. A profile says which execution providers to try, in
order, for each graph (the fallback order), with their options; the threads to use; the memory the model may take
(checked before any session exists); and which bundle variant to prefer. Shipped profiles live in
``device_profiles/`` at the repository root (``$EDGELMM_PROFILES`` adds another directory)::

    from edgelmm.runtime.profile import list_profiles, load_profile
    list_profiles()                      # ['apple-m2', 'dimensity-9300', ..., 'snapdragon-8-gen3']
    profile = load_profile("raspberry-pi-5")          # a shipped name, or a path to a .yaml file

Every problem in a file (unknown keys, wrong types, bad values, an empty file) is reported in one ProfileError line.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgelmm import strict_yaml
from edgelmm.errors import ProfileError, SpecError
from edgelmm.registry import lookup
from edgelmm.specs import SPEC, GraphRole, Precision, from_dict, to_dict

PROFILES_ENV = "EDGELMM_PROFILES"
SHIPPED_DIR = Path(__file__).resolve().parents[3] / "device_profiles"
"""The repository's device_profiles/ (this file is sdk/edgelmm/runtime/profile.py)."""
MAX_PROFILE_BYTES = 256 * 2**10  # a profile is a few KB; refuse anything larger before parsing it
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class Provider(enum.StrEnum):
    """Execution providers a profile can list. Values are the YAML keys; :attr:`ort_name` is onnxruntime's name."""

    QNN = "qnn"  # Qualcomm Hexagon NPU (HTP) through the onnxruntime-qnn plug-in
    XNNPACK = "xnnpack"  # ARM/x86 CPU kernels from XNNPACK (Android/iOS onnxruntime builds)
    COREML = "coreml"  # Apple Neural Engine / GPU / CPU through Core ML
    NNAPI = "nnapi"  # Android NNAPI (deprecated from Android 15; kept for older phones)
    CPU = "cpu"  # onnxruntime's own CPU kernels: always available

    @property
    def ort_name(self) -> str:
        return _ORT_NAMES[self]


_ORT_NAMES = {
    Provider.QNN: "QNNExecutionProvider",
    Provider.XNNPACK: "XnnpackExecutionProvider",
    Provider.COREML: "CoreMLExecutionProvider",
    Provider.NNAPI: "NnapiExecutionProvider",
    Provider.CPU: "CPUExecutionProvider",
}


class FormFactor(enum.StrEnum):
    PHONE = "phone"
    TABLET = "tablet"
    LAPTOP = "laptop"
    DESKTOP = "desktop"
    SINGLE_BOARD_COMPUTER = "single-board-computer"
    SERVER = "server"


class OperatingSystem(enum.StrEnum):
    ANDROID = "android"
    IOS = "ios"
    LINUX = "linux"
    MACOS = "macos"
    WINDOWS = "windows"


class CoreKind(enum.StrEnum):
    """big.LITTLE tiers: prime (the fastest, often one core), performance (big), efficiency (LITTLE)."""

    PRIME = "prime"
    PERFORMANCE = "performance"
    EFFICIENCY = "efficiency"


class HtpPerformanceMode(enum.StrEnum):
    """QNN HTP power/performance vote (onnxruntime's ``htp_performance_mode``)."""

    DEFAULT = "default"
    BURST = "burst"
    BALANCED = "balanced"
    HIGH_PERFORMANCE = "high_performance"
    SUSTAINED_HIGH_PERFORMANCE = "sustained_high_performance"
    HIGH_POWER_SAVER = "high_power_saver"
    LOW_BALANCED = "low_balanced"
    LOW_POWER_SAVER = "low_power_saver"
    POWER_SAVER = "power_saver"
    EXTREME_POWER_SAVER = "extreme_power_saver"


class QnnBackend(enum.StrEnum):
    HTP = "htp"  # the Hexagon NPU (on x86-64 Linux, onnxruntime-qnn ships an HTP simulator)
    GPU = "gpu"  # Adreno GPU (cannot initialise without one)
    CPU = "cpu"  # QNN's reference CPU backend (libQnnCpu.so is not in the onnxruntime-qnn 2.7 wheel)


class CoremlComputeUnits(enum.StrEnum):
    ALL = "ALL"
    CPU_AND_NEURAL_ENGINE = "CPUAndNeuralEngine"
    CPU_AND_GPU = "CPUAndGPU"
    CPU_ONLY = "CPUOnly"


class CoremlModelFormat(enum.StrEnum):
    ML_PROGRAM = "MLProgram"  # macOS 12 / iOS 15+: fp16 on the Neural Engine, more ops
    NEURAL_NETWORK = "NeuralNetwork"


# ----------------------------------------------------------------------------------------------------------------
# Provider options: one dataclass per provider, each turning itself into onnxruntime's string options


@dataclasses.dataclass(**SPEC)
class QnnOptions:
    """QNN EP options (onnxruntime QNN-ExecutionProvider docs). Numbers for a phone come from its SoC."""

    backend: QnnBackend = QnnBackend.HTP
    backend_path: str | None = None
    """Library to load; default: the one onnxruntime-qnn ships for ``backend`` (libQnnHtp.so on a phone's path)."""
    soc_model: int | None = None
    """Qualcomm SoC id (SM8550 = 43, SM8650 = 57, SM8750 = 69); the x86 HTP simulator needs one to be exact."""
    htp_arch: int | None = None
    """Hexagon architecture (73 = v73, 75 = v75, 79 = v79)."""
    htp_performance_mode: HtpPerformanceMode = HtpPerformanceMode.BURST
    htp_fp16_precision: bool = True
    """Run float (non-QDQ) nodes in fp16 on HTP; with false they are refused and fall back."""
    vtcm_mb: int | None = None
    context_cache: bool = False
    """Compile the graph to a QNN context binary once and reuse it on later loads (in $EDGELMM_CACHE/qnn-context)."""

    def __post_init__(self) -> None:
        for name in ("soc_model", "htp_arch", "vtcm_mb"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SpecError(f"qnn.{name} must be >= 0, got {value}")

    def ort_options(self) -> dict[str, str]:
        """onnxruntime provider options, less ``backend_path`` (resolved where the plug-in is known)."""
        out = {
            "htp_performance_mode": str(self.htp_performance_mode),
            "enable_htp_fp16_precision": "1" if self.htp_fp16_precision else "0",
        }
        for name in ("soc_model", "htp_arch", "vtcm_mb"):
            if getattr(self, name) is not None:
                out[name] = str(getattr(self, name))
        return out


@dataclasses.dataclass(**SPEC)
class XnnpackOptions:
    threads: int | None = None
    """XNNPACK's own thread pool; default: the profile's intra-op threads (the session then runs with one)."""

    def ort_options(self, default_threads: int) -> dict[str, str]:
        return {"intra_op_num_threads": str(self.threads or default_threads)}


@dataclasses.dataclass(**SPEC)
class CoremlOptions:
    compute_units: CoremlComputeUnits = CoremlComputeUnits.ALL
    model_format: CoremlModelFormat = CoremlModelFormat.ML_PROGRAM
    require_static_input_shapes: bool = False
    """Only take nodes with static input shapes (the Neural Engine needs them; the decoder's are dynamic)."""

    def ort_options(self) -> dict[str, str]:
        return {
            "MLComputeUnits": str(self.compute_units),
            "ModelFormat": str(self.model_format),
            "RequireStaticInputShapes": "1" if self.require_static_input_shapes else "0",
        }


@dataclasses.dataclass(**SPEC)
class NnapiOptions:
    use_fp16: bool = False
    use_nchw: bool = False
    cpu_disabled: bool = True
    """Keep NNAPI off its own CPU reference implementation (slower than onnxruntime's CPU kernels)."""

    def ort_options(self) -> dict[str, str]:
        flags = {"NNAPI_FLAG_USE_FP16": self.use_fp16, "NNAPI_FLAG_USE_NCHW": self.use_nchw,
                 "NNAPI_FLAG_CPU_DISABLED": self.cpu_disabled}
        return {k: "1" for k, on in flags.items() if on}


@dataclasses.dataclass(**SPEC)
class CpuOptions:
    arena: bool = True
    """onnxruntime's CPU memory arena: faster, but it keeps the largest activations it has seen."""


@dataclasses.dataclass(**SPEC)
class ProviderSpec:
    """One entry of a fallback list: exactly one provider key with its options, e.g. ``{qnn: {soc_model: 57}}``."""

    qnn: QnnOptions | None = None
    xnnpack: XnnpackOptions | None = None
    coreml: CoremlOptions | None = None
    nnapi: NnapiOptions | None = None
    cpu: CpuOptions | None = None
    strict: bool = False
    """All nodes on this provider or skip it: the session is created with CPU fallback disabled, which proves the
    placement (``get_providers()`` lists a provider even when no node runs there)."""

    def __post_init__(self) -> None:
        named = [p for p in Provider if getattr(self, p.value) is not None]
        if len(named) != 1:
            got = ", ".join(named) if named else "none"
            raise SpecError(f"a provider entry names exactly one of {', '.join(Provider)} (got {got})")
        if self.strict and named[0] is Provider.CPU:
            raise SpecError("strict has no meaning for cpu (it is the fallback itself)")

    @property
    def provider(self) -> Provider:
        return next(p for p in Provider if getattr(self, p.value) is not None)

    @property
    def options(self) -> Any:
        return getattr(self, self.provider.value)

    @classmethod
    def cpu_default(cls) -> ProviderSpec:
        return cls(cpu=CpuOptions())


@dataclasses.dataclass(**SPEC)
class CoreCluster:
    count: int
    kind: CoreKind
    core: str
    """Microarchitecture (Cortex-X4, Oryon, Zen 4...)."""
    max_ghz: float | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise SpecError(f"cores: count must be >= 1, got {self.count}")


@dataclasses.dataclass(**SPEC)
class Threads:
    intra_op: int
    """Threads inside one operator; we use the prime + performance cores (little cores slow a parallel op down)."""
    inter_op: int = 1
    """Threads across independent operators; 1 because our graphs run sequentially."""

    def __post_init__(self) -> None:
        if self.intra_op < 1 or self.inter_op < 1:
            raise SpecError(f"threads must be >= 1, got intra_op={self.intra_op}, inter_op={self.inter_op}")


@dataclasses.dataclass(**SPEC)
class DeviceProfile:
    """One target device. See device_profiles/README.md for the meaning of each field and where numbers come from."""

    name: str
    """kebab-case; equals the file name without .yaml."""
    chipset: str
    form_factor: FormFactor
    os: OperatingSystem
    source: str
    """Where the numbers come from: vendor specification (name/URL) or the command that measured them."""
    cores: tuple[CoreCluster, ...]
    memory_mb: int
    """Device RAM (the reference configuration named in ``source``)."""
    memory_budget_mb: int
    """What one edgelmm pipeline may use; checked against the bundle's estimate before any session is created."""
    threads: Threads
    providers: tuple[ProviderSpec, ...]
    """The fallback order for every graph: each is tried in turn; CPU is the usual last entry."""
    graph_providers: dict[GraphRole, tuple[ProviderSpec, ...]] = dataclasses.field(default_factory=dict)
    """Per-graph fallback lists that replace ``providers`` for that graph (vision on the NPU, decoder on CPU)."""
    precision: tuple[Precision, ...] = (Precision.INT4, Precision.INT8, Precision.FP32)
    """Bundle-variant preference, best first; variants of other precisions are not picked."""
    variant: str | None = None
    """Pin one variant (a subdirectory name of a variants directory) instead of choosing by precision."""
    max_context: int = 2048
    """Cap on prompt + generated tokens (and the KV cache the budget reserves); the bundle's own cap still holds."""
    max_visual_tokens: int = 256
    """Most visual tokens per image a bundle may produce on this device (vision-encode and prefill cost)."""
    prefill_chunk: int = 512
    """Prompt tokens per decoder call while prefilling: bounds activation memory (logits chunk x vocab, attention
    chunk x context) at a small cost in speed (llama.cpp's ubatch, 512 by default there too)."""
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append(f"name '{self.name}' must be kebab-case (a-z, 0-9, '-')")
        if not self.source.strip():
            problems.append("source must say where the numbers come from")
        if not self.cores:
            problems.append("cores must list at least one cluster")
        if self.memory_mb < 1 or not 1 <= self.memory_budget_mb <= self.memory_mb:
            problems.append(f"memory_budget_mb must be in [1, memory_mb={self.memory_mb}], got {self.memory_budget_mb}")
        if self.max_context < 2:
            problems.append(f"max_context must be >= 2, got {self.max_context}")
        if self.prefill_chunk < 1:
            problems.append(f"prefill_chunk must be >= 1, got {self.prefill_chunk}")
        if self.max_visual_tokens < 0:
            problems.append(f"max_visual_tokens must be >= 0, got {self.max_visual_tokens}")
        if not self.precision or len(set(self.precision)) != len(self.precision):
            problems.append("precision must list each precision at most once, at least one")
        for where, specs in (("providers", self.providers), *self.graph_providers.items()):
            names = [s.provider for s in specs]
            if not names:
                problems.append(f"{where}: the fallback list is empty")
            elif len(set(names)) != len(names):
                problems.append(f"{where}: a provider is listed twice ({', '.join(names)})")
        if problems:
            raise SpecError("; ".join(problems))

    @property
    def core_count(self) -> int:
        return sum(c.count for c in self.cores)

    def providers_for(self, role: GraphRole) -> tuple[ProviderSpec, ...]:
        """The fallback list for one graph: its override if the profile has one, else ``providers``."""
        return self.graph_providers.get(role, self.providers)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON, without unset options (``from_dict(DeviceProfile, p.to_dict()) == p``)."""
        return _prune(to_dict(self))


def _prune(data: Any) -> Any:
    """Drop None values and false ``strict`` flags, so a dumped profile reads like the hand-written ones."""
    if isinstance(data, dict):
        return {k: _prune(v) for k, v in data.items() if v is not None and not (k == "strict" and v is False)}
    if isinstance(data, list):
        return [_prune(v) for v in data]
    return data


# ----------------------------------------------------------------------------------------------------------------
# Loading


def profile_dirs() -> list[Path]:
    """Where named profiles are looked up: ``$EDGELMM_PROFILES`` (os.pathsep-separated) first, then the shipped."""
    extra = [Path(p) for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    return [*extra, SHIPPED_DIR]


def profile_files() -> dict[str, Path]:
    """name -> file of every profile in :func:`profile_dirs` (recursive); an earlier directory wins a name."""
    found: dict[str, Path] = {}
    for directory in profile_dirs():
        if directory.is_dir():
            for path in sorted(directory.rglob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def list_profiles() -> list[str]:
    """Names of the profiles :func:`load_profile` accepts, sorted (for pickers: the demo, ``--profile``)."""
    return sorted(profile_files())


def load_profile(name_or_path: str | os.PathLike[str] | DeviceProfile) -> DeviceProfile:
    """A profile by shipped name (``snapdragon-8-gen3``) or by path to a YAML file; a DeviceProfile passes through."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = os.fspath(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or os.sep in text or path.is_file():
        return read_profile(path)
    return read_profile(lookup(profile_files(), text, what="device profile"))


def read_profile(path: str | os.PathLike[str]) -> DeviceProfile:
    """Parse one YAML file strictly: every problem in it is listed in a single ProfileError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ProfileError(f"device profile '{path}' cannot be read: {exc.strerror}") from None
    if size > MAX_PROFILE_BYTES:
        raise ProfileError(f"device profile '{path}' is {size} bytes; a profile is at most {MAX_PROFILE_BYTES}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"device profile '{path}' cannot be read: {exc.strerror}") from None
    # strict: no aliases (billion laughs), no duplicate keys (which the last one would silently win), no NaN
    data = strict_yaml.load(raw, where=f"device profile {path}", error=ProfileError)
    if data is None:
        raise ProfileError(f"device profile '{path}' is empty")
    return parse_profile(data, where=str(path), expect_name=path.stem)


def parse_profile(data: Any, *, where: str = "profile", expect_name: str | None = None) -> DeviceProfile:
    """DeviceProfile from decoded YAML/JSON; ``expect_name`` (the file stem) must equal the ``name`` field."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping of profile fields, got {type(data).__name__}")
    problems = []
    if expect_name is not None and data.get("name") not in (None, expect_name):
        problems.append(f"name '{data.get('name')}' differs from the file name '{expect_name}'")
    try:
        profile = from_dict(DeviceProfile, data, where=where)
    except SpecError as exc:
        message = str(exc)
        if problems:
            message += "; " + "; ".join(problems)
        raise ProfileError(message) from None
    if problems:
        raise ProfileError(f"{where}: {'; '.join(problems)}")
    return profile

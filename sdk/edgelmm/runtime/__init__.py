"""The torch-free runtime: onnxruntime, numpy, Pillow, PyYAML, tokenizers and jinja2 only.

``from edgelmm.runtime import Pipeline`` is the whole user API; nothing here imports torch, transformers or onnx
(a test checks this in a subprocess).
"""

from edgelmm.runtime.manifest import Manifest, load_bundle
from edgelmm.runtime.metrics import Metrics
from edgelmm.runtime.pipeline import Pipeline, Result
from edgelmm.runtime.profile import DeviceProfile, list_profiles, load_profile
from edgelmm.specs import GenerationSpec

__all__ = ["DeviceProfile", "GenerationSpec", "Manifest", "Metrics", "Pipeline", "Result", "list_profiles",
           "load_bundle", "load_profile"]

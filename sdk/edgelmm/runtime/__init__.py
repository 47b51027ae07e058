"""The torch-free runtime: onnxruntime, numpy, Pillow, PyYAML, tokenizers and jinja2 only.

``from edgelmm.runtime import Pipeline`` is the whole user API; nothing here imports torch, transformers or onnx
(a test checks this in a subprocess).
"""

from edgelmm.runtime.manifest import Manifest, load_bundle
from edgelmm.runtime.metrics import Metrics
from edgelmm.runtime.pipeline import Pipeline, Result
from edgelmm.specs import GenerationSpec

__all__ = ["GenerationSpec", "Manifest", "Metrics", "Pipeline", "Result", "load_bundle"]

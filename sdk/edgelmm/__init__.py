"""edgelmm: lightweight multimodal models from training to phones."""

__version__ = "0.1.0"

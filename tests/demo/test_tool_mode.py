"""The demo's tool-selection mode: shown for bundles whose manifest lists tools; constrained picks are listed tools."""

import json
import shutil

import pytest

from edgelmm.demo.engine import Engine
from edgelmm.errors import InputError

TOOLS = ["document-question-answering", "image-text-to-text", "depth-estimation", "sam", "unknown"]


@pytest.fixture(scope="module")
def tool_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a tool list in its manifest (what exporting an mllm-tool model writes)."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-tools"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tools"] = TOOLS
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_tool_mode_picks_listed_tools_and_shows_free_decoding_too(tool_bundle, tiny_bundle, sample_images, tmp_path):
    from edgelmm.demo.app import MODES

    image = tmp_path / "scene.png"
    sample_images[0].save(image)
    engine = Engine(tool_bundle)
    assert MODES["tools"].supported(engine.manifest) and not MODES["tools"].supported(Engine(tiny_bundle).manifest)
    tool, result = engine.pick_tool("What does this say?", str(image))
    assert tool in TOOLS and result.finish_reason == "choice" and result.text == f'{{"api_name": "{tool}"}}'
    _, free = engine.pick_tool("What does this say?", str(image), constrained=False)
    assert free.finish_reason in ("eos", "length")
    with pytest.raises(InputError, match="lists no tools"):
        Engine(tiny_bundle).pick_tool("What does this say?", str(image))

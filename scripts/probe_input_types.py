"""Can a vision LMM's image features tell the tool-selection input types apart? A linear probe (diagnostic).

    PYTHONPATH=sdk python scripts/probe_input_types.py runs/tool [--train 60] [--test 40]

Fits a logistic regression on (a) the tower's hidden states at the connector's feature layer, mean over patches, and
(b) the connector's output tokens, flattened, of ``--train`` images per input type from the train split, and reports
accuracy and confusions on ``--test`` images per type from the test split (held-out photographs). A type the probe
cannot separate is one the LM cannot be expected to route on (docs/tool-selection.md).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from edgelmm.evals.torch_answerer import load_model
from edgelmm.runtime.preprocess import preprocess
from edgelmm.train.data.tool_selection import INPUT_TYPES, ToolSelectionDataset


def features(loaded, split: str, per_type: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tower [N, hidden], connector [N, tokens * lm_hidden], labels [N]) for ``per_type`` images of each type."""
    model = loaded.model.eval()
    images, labels = [], []
    for k, kind in enumerate(INPUT_TYPES):
        for i in range(per_type):
            images.append(ToolSelectionDataset.input_image(kind, split, np.random.default_rng([i, k, 0x9B0E])))
            labels.append(kind)
    tower, connector = [], []
    for start in range(0, len(images), 32):
        pixels = torch.from_numpy(preprocess(images[start : start + 32], loaded.preprocess))
        with torch.no_grad():
            hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
            tower.append(hidden[model.config.vision_feature_layer].mean(1).numpy())
            out = model.model.get_image_features(pixel_values=pixels)
            out = getattr(out, "pooler_output", out)
            out = torch.stack(list(out)) if isinstance(out, list | tuple) else out
            connector.append(out.reshape(len(pixels), -1).numpy())
    return np.concatenate(tower), np.concatenate(connector), np.array(labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a run directory, a model/ directory or a registry name")
    p.add_argument("--train", type=int, default=60, help="images per type to fit on")
    p.add_argument("--test", type=int, default=40, help="images per type to score")
    args = p.parse_args()
    loaded = load_model(args.model)
    fit, score = features(loaded, "train", args.train), features(loaded, "test", args.test)
    for name, k in (("tower (mean over patches)", 0), ("connector output (tokens flattened)", 1)):
        predicted = LogisticRegression(max_iter=3000).fit(fit[k], fit[2]).predict(score[k])
        truth = score[2]
        per_type = {t: round(float((predicted[truth == t] == t).mean()), 3) for t in INPUT_TYPES}
        print(f"{name}: accuracy {float((predicted == truth).mean()):.3f} per type {per_type}")
        for t in INPUT_TYPES:
            wrong = collections.Counter(str(x) for x in predicted[(truth == t) & (predicted != t)])
            if wrong:
                print(f"    {t} read as {dict(wrong)}")


if __name__ == "__main__":
    main()

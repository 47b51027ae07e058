"""Built-in datasets (torch-free): DATASETS maps a name to a generator of deterministic examples."""

from __future__ import annotations

from edgelmm.train.data.base import Dataset, Example, normalise_answer
from edgelmm.train.data.digits import DigitsDataset
from edgelmm.train.data.shapes import ShapesDataset
from edgelmm.train.data.tool_selection import ToolSelectionDataset

DATASETS: dict[str, Dataset] = {
    "shapes": ShapesDataset(),
    "shapes-compositional": ShapesDataset(compositional=True),
    "digits": DigitsDataset(),
    "tool-selection": ToolSelectionDataset(),
    "tool-selection-blind": ToolSelectionDataset(blind=True),
}

__all__ = ["DATASETS", "Dataset", "Example", "normalise_answer"]

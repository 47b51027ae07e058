"""Export an Item-Language Model: the frozen LM's usual bundle plus ``item_encoder.onnx`` and the CF table.

The LM's graphs (token embedding, decoder) are exported exactly as for the text-only LM, so on plain text the
bundle answers token for token as the base LM's bundle does; items enter only through the item encoder's output,
written into the prompt's ``<item>`` slots by the runtime.

    edgelmm export --model runs/ilm/model --out bundles/smol-ilm [--precision int4]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgelmm.export import validate
from edgelmm.export.exporter import ExportOptions, Log, _graph_spec, export_model
from edgelmm.export.graphs import export_role
from edgelmm.export.io_spec import BATCH, RoleIO, TensorIO
from edgelmm.export.quantize import QuantSpec
from edgelmm.models.item_encoder import ItemEncoder, load_item_lm_dir
from edgelmm.runtime.items import ITEM_TOKEN, write_table
from edgelmm.runtime.manifest import ItemsSpec, Manifest
from edgelmm.specs import GraphRole, Precision

ITEM_ENCODER_FILE = "item_encoder.onnx"
TABLE_FILE = "cf_table.bin"
ITEM_IO = RoleIO(GraphRole.ITEM_ENCODER, inputs=(TensorIO("item_cf", "float32", {0: BATCH}),),
                 outputs=(TensorIO("item_tokens", "float32", {0: BATCH}),))


def export_item_lm(model_dir: Path, out: Path, options: ExportOptions = ExportOptions(), *, force: bool = False,
                   log: Log = lambda _: None) -> Manifest:
    """Export the ilm model directory ``model_dir`` (edgelmm train --recipe ilm) to the bundle ``out``."""
    lm, encoder, table, _, _ = load_item_lm_dir(model_dir)

    def add_items(tmp: Path, manifest: Manifest, log_: Log) -> Manifest:
        return _add_item_encoder(tmp, manifest, encoder, table, options, log_)

    return export_model(lm, out, options, force=force, log=log, extra=add_items)


def _add_item_encoder(tmp: Path, manifest: Manifest, encoder: ItemEncoder, table: torch.Tensor,
                      options: ExportOptions, log: Log) -> Manifest:
    log("exporting item_encoder (Q-Former + adaptor) and the CF table...")
    path = tmp / ITEM_ENCODER_FILE
    trace = table[:2].clone()
    export_role(encoder, (trace,), ITEM_IO, path, opset=options.opset, external_data=False)
    # the item encoder stays fp32 at every precision: ~1 MB, and its tokens steer the whole answer
    cases = validate.validate_item_encoder(path, encoder, table, validate.tolerance(Precision.FP32,
                                                                                     GraphRole.ITEM_ENCODER))
    validate.check(cases)
    write_table(tmp / TABLE_FILE, table.numpy().astype(np.float32))
    graphs = {**manifest.graphs, GraphRole.ITEM_ENCODER: _graph_spec(path, tmp, options, QuantSpec())}
    validation = dict(manifest.validation)
    validation["cases"] = [*validation.get("cases", []), *(c.to_dict() for c in cases)]
    validation["passed"] = bool(validation.get("passed", True)) and all(c.passed for c in cases)
    items = ItemsSpec(table_file=TABLE_FILE, num_items=int(table.shape[0]), cf_dim=int(table.shape[1]),
                      num_item_tokens=encoder.config.num_item_tokens, placeholder=ITEM_TOKEN)
    return dataclasses.replace(manifest, graphs=graphs, items=items, validation=validation,
                               model=dataclasses.replace(manifest.model, name=f"{manifest.model.name}+items"))

"""Item-Language Model bundles: item_encoder.onnx + CF table in the manifest, items= in the torch-free runtime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgelmm.errors import BundleError, BundleIntegrityError, InputError
from edgelmm.runtime.items import read_table, write_table
from edgelmm.runtime.manifest import load_bundle, read_manifest
from edgelmm.specs import GraphRole


def test_bundle_lists_item_encoder_and_cf_table(tiny_ilm_bundle):
    manifest = load_bundle(tiny_ilm_bundle)
    assert manifest.has_items and GraphRole.ITEM_ENCODER in manifest.graphs
    assert manifest.items.table_file in manifest.files and manifest.items.num_item_tokens == 4
    assert manifest.graphs[GraphRole.ITEM_ENCODER].outputs[0].shape[1:] == (4, manifest.model.hidden_size)
    assert manifest.validation["passed"] and any(c["graph"] == "item_encoder" for c in manifest.validation["cases"])


def test_tampered_cf_table_is_refused(tiny_ilm_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_ilm_bundle, bundle)
    table = bundle / "cf_table.bin"
    data = bytearray(table.read_bytes())
    data[-1] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="cf_table.bin"):
        load_bundle(bundle)


def test_item_section_without_graph_is_refused(tiny_ilm_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_ilm_bundle, bundle)
    doc = json.loads((bundle / "manifest.json").read_text())
    del doc["graphs"]["item_encoder"]
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="item_encoder graph and the items section go together"):
        read_manifest(bundle)


def test_table_file_round_trip_and_refusals(tmp_path):
    path = tmp_path / "t.bin"
    table = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    write_table(path, table)
    assert np.array_equal(read_table(path, rows=5, dim=3), table)
    with pytest.raises(BundleError, match="shape"):
        read_table(path, rows=5, dim=4)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(BundleError, match="bytes, expected"):
        read_table(path, rows=5, dim=3)
    path.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(BundleError, match="not a CF table"):
        read_table(path, rows=5, dim=3)


@pytest.fixture(scope="module")
def ilm_pipeline(tiny_ilm_bundle):
    from edgelmm.runtime import Pipeline

    return Pipeline.load(tiny_ilm_bundle, threads=1)


def test_runtime_items_match_torch_greedy(ilm_pipeline, tiny_ilm_run):
    """ORT (item encoder + shared LM graphs) and torch (ItemLanguageModel) pick the same tokens for an item prompt."""
    from edgelmm.train.data.item_chat import ItemChatCollator
    from edgelmm.train.item_lm import load

    trained = load(tiny_ilm_run / "model")
    prompt, items = "Compare <item> and <item>.", [3, 11]
    res = ilm_pipeline.generate(prompt, items=items, max_new_tokens=6, ignore_eos=True)
    collate = ItemChatCollator(tokenizer=trained.lm.tokenizer, chat_template=trained.lm.chat_template,
                               num_item_tokens=4)
    ids, slots = collate.prompt_ids(prompt)
    assert res.prompt_tokens == len(ids)
    input_ids = torch.tensor([ids])
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    mask[0, slots] = True
    tokens = []
    with torch.no_grad():
        embeds = trained.model.embed(input_ids, mask, torch.tensor(items))
        for _ in range(6):
            nxt = int(trained.model.lm(inputs_embeds=embeds).logits[0, -1].argmax())
            tokens.append(nxt)
            embeds = torch.cat([embeds, trained.model.lm.get_input_embeddings()(torch.tensor([[nxt]]))], dim=1)
    assert res.token_ids == tokens
    other = ilm_pipeline.generate(prompt, items=[20, 40], max_new_tokens=6, ignore_eos=True)
    encoded = ilm_pipeline.encode_items([3, 20])
    assert encoded.shape == (2, 4, 32) and not np.allclose(encoded[0], encoded[1])
    assert other.prompt_tokens == res.prompt_tokens


def test_plain_text_is_token_identical_to_the_base_lm_bundle(ilm_pipeline, tiny_lm_bundle):
    from edgelmm.runtime import Pipeline

    base = Pipeline.load(tiny_lm_bundle, threads=1)
    for prompt in ("Hello there", "What is <item>?"):  # without items=, <item> is plain text
        a = ilm_pipeline.generate(prompt, max_new_tokens=8, ignore_eos=True)
        b = base.generate(prompt, max_new_tokens=8, ignore_eos=True)
        assert a.token_ids == b.token_ids
    decoder = [read_manifest(p).files["decoder.onnx"].sha256 for p in (ilm_pipeline.root, tiny_lm_bundle)]
    assert decoder[0] == decoder[1]  # the very same decoder graph


@pytest.mark.parametrize(("prompt", "items", "message"), [
    ("What is <item>?", [1, 2], "1 <item> placeholder(s) but 2 item(s)"),
    ("What is this?", [1], "0 <item> placeholder(s) but 1 item(s)"),
    ("What is <item>?", [10_000], "outside the catalog"),
    ("What is <item>?", [-1], "outside the catalog"),
    ("What is <item>?", ["7"], "must be integers"),
    ("What is <item>?", [True], "must be integers"),
    ("What is <item>?", "7", "must be a list"),
])
def test_runtime_refuses_bad_items(ilm_pipeline, prompt, items, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ilm_pipeline.generate(prompt, items=items, max_new_tokens=1)


def test_items_on_a_text_bundle_are_refused(tiny_lm_bundle):
    from edgelmm.runtime import Pipeline

    with pytest.raises(InputError, match="no item encoder"):
        Pipeline.load(tiny_lm_bundle, threads=1).generate("What is <item>?", items=[1], max_new_tokens=1)


def test_run_cli_takes_items(tiny_ilm_bundle, capsys):
    from edgelmm.cli import main

    args = ["run", "--bundle", str(tiny_ilm_bundle), "--prompt", "What is <item>?", "--max-new-tokens", "2", "--json"]
    assert main([*args, "--item", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt_tokens"] > 4
    assert main([*args, "--item", "99999"]) == 2
    assert "outside the catalog" in capsys.readouterr().err


def test_bundle_scores_titles_as_torch_does(tiny_ilm_run, tiny_ilm_bundle, capsys):
    """The rec eval's bundle system (Pipeline.score + the item encoder) ranks with torch's title log-likelihoods."""
    from edgelmm.cli import main
    from edgelmm.evals import rec
    from edgelmm.train.item_lm import load

    trained = load(tiny_ilm_run / "model")
    torch_scorer = rec.TitleScorer(trained.model, trained.lm, trained.data, items=True, num_item_tokens=4)
    bundle_scorer = rec.BundleTitleScorer(str(tiny_ilm_bundle), trained.data, threads=1)
    for case in rec.cases(trained.data, trained.held_out_users, n=3, candidates=6):
        np.testing.assert_allclose(bundle_scorer(case), torch_scorer(case), atol=2e-3)
    prior = torch_scorer.prior()  # PMI's reference: every title after the neutral prompt
    assert prior.shape == (trained.data.n_items,)
    np.testing.assert_allclose(bundle_scorer.prior(), prior, atol=2e-3)
    pmi = rec.Calibrated(torch_scorer)
    np.testing.assert_allclose(pmi(case), torch_scorer(case) - prior[case.candidates])
    assert main(["eval", "--task", "rec", "--model", str(tiny_ilm_run / "model"), "-n", "4", "--threads", "1",
                 "--rec-bundle", str(tiny_ilm_bundle), "--json"]) == 0
    systems = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["systems"]
    ilm, exported = systems["ilm"], systems[f"bundle:{tiny_ilm_bundle.name}"]
    assert exported["users"] == 4 and abs(exported["ndcg@10"] - ilm["ndcg@10"]) < 0.05  # same cases, same ranks
    assert main(["eval", "--task", "rec", "--model", str(tiny_ilm_run / "model"), "-n", "4", "--calibrate",
                 "--systems", "ilm,text-lm"]) == 0
    assert "ranked by pmi" in capsys.readouterr().out


def test_rec_bundle_must_carry_the_catalog(tiny_ilm_run, tiny_lm_bundle):
    from edgelmm.errors import SpecError
    from edgelmm.evals import rec
    from edgelmm.train.item_lm import load

    with pytest.raises(SpecError, match="does not carry the .*-item catalog"):
        rec.BundleTitleScorer(str(tiny_lm_bundle), load(tiny_ilm_run / "model", with_lm=False).data)

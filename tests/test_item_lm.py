"""Item-Language Model: interaction data, BPR, Q-Former encoder, phase-1 losses, recipe, rec eval (tiny LM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelmm.errors import SpecError
from edgelmm.train.data.interactions import InteractionDataError, load_movielens, simulate

MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure|Fantasy\n3::Heat (1995)::Action\n"
RATINGS = "7::2::4::300\n7::1::5::100\n7::2::3::400\n8::3::2::50\n8::1::4::60\n"


def _write(tmp_path, ratings=RATINGS, movies=MOVIES):
    (tmp_path / "ratings.dat").write_text(ratings)
    (tmp_path / "movies.dat").write_text(movies)
    return tmp_path / "ratings.dat", tmp_path / "movies.dat"


def test_movielens_loader_orders_by_time_and_keeps_first_engagement(tmp_path):
    data = load_movielens(*_write(tmp_path))
    assert [it.title for it in data.items] == ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)"]
    assert data.items[0].genres == ("Animation", "Children's", "Comedy")
    assert data.histories == ((0, 1), (2, 0))  # user 7: item 1 at t=100, item 2 at 300 (re-rated at 400)
    assert load_movielens(*_write(tmp_path), min_rating=4).histories == ((0, 1), (0,))  # user 8 loses item 3


@pytest.mark.parametrize(("ratings", "movies", "message"), [
    ("7::2::4\n", MOVIES, "ratings.dat:1: expected 4"),
    ("7::1::4::100\n7::9::4::100\n", MOVIES, "ratings.dat:2: item id '9' is not in"),
    ("7::1::x::100\n", MOVIES, "rating 'x' is not a number"),
    ("7::1::nan::100\n", MOVIES, "is not finite"),
    ("7::1::99::100\n", MOVIES, "outside [0, 10]"),
    ("7::1::4::1.5\n", MOVIES, "timestamp '1.5' is not a number"),
    ("", MOVIES, "ratings.dat: no rows"),
    (RATINGS, MOVIES + "1::Again::Drama\n", "movies.dat:4: duplicate item id '1'"),
    (RATINGS, "1:: ::Drama\n", "movies.dat:1: expected 3 non-empty"),
])
def test_movielens_loader_refuses_bad_rows_in_one_line(tmp_path, ratings, movies, message):
    with pytest.raises(InteractionDataError) as err:
        load_movielens(*_write(tmp_path, ratings, movies))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_movielens_loader_missing_file(tmp_path):
    with pytest.raises(InteractionDataError, match="cannot read"):
        load_movielens(tmp_path / "nope.dat", tmp_path / "movies.dat")


def test_simulator_is_deterministic_and_text_carries_only_genres():
    a, b = simulate(n_items=60, n_users=50, seed=3), simulate(n_items=60, n_users=50, seed=3)
    assert a == b and simulate(n_items=60, n_users=50, seed=4).histories != a.histories
    assert len({it.title for it in a.items}) == 60
    for item in a.items:  # the description names the genres; nothing in it varies with the hidden latent
        assert all(g in item.description for g in item.genres)
    assert all(len(set(h)) == len(h) for h in a.histories)
    with pytest.raises(SpecError):
        simulate(n_items=1)


@pytest.fixture(scope="module")
def small_data():
    return simulate(n_items=60, n_users=400, history=(6, 12), seed=0)


def test_bpr_learns_the_hidden_factor(small_data):
    """CF beats popularity on held-out users: the simulator's hidden factor is learnable from interactions."""
    from edgelmm.evals import rec
    from edgelmm.train.bpr import train_bpr

    train_users, held_out = small_data.split_users(0.2, 0)
    cf = train_bpr(small_data, train_users, dim=16, steps=1500)
    cases = rec.cases(small_data, held_out, n=80, candidates=20)
    pop = small_data.popularity(train_users).astype(float)
    cf_m = rec.evaluate(lambda c: cf.scores(c.history, c.candidates), cases)
    pop_m = rec.evaluate(lambda c: pop[c.candidates], cases)
    assert cf_m["ndcg@10"] > pop_m["ndcg@10"] + 0.05, (cf_m, pop_m)


def test_rank_metrics():
    from edgelmm.evals.rec import metrics, target_rank

    m = metrics([0, 1, 10])
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert target_rank(np.array([1.0, 3.0, 2.0, 0.5]), np.random.default_rng(0)) == 2


# ----------------------------------------------------------------------------------------------------------------
# Losses and the encoder


def test_item_text_contrastive_prefers_aligned_pairs():
    from edgelmm.train.losses import item_item_contrastive, item_text_contrastive, item_text_matching

    torch.manual_seed(0)
    text = torch.randn(6, 8)
    aligned = text[:, None, :].repeat(1, 3, 1) + 0.01 * torch.randn(6, 3, 8)
    temp = torch.tensor(0.1)
    assert item_text_contrastive(aligned, text, temp) < 0.1
    assert item_text_contrastive(aligned, text.roll(1, 0), temp) > 5
    # a duplicate of the positive elsewhere in the batch is not a negative once ``same`` says so
    dup = torch.cat([text[:3], text[:3]])
    same = torch.eye(6, dtype=torch.bool) | torch.eye(6, dtype=torch.bool).roll(3, 1)
    assert item_item_contrastive(dup, dup, temp, same) < item_item_contrastive(dup, dup, temp) - 0.5
    assert item_text_matching(torch.tensor([[0.0, 9.0], [9.0, 0.0]]), torch.tensor([1, 0])) < 1e-3


def test_item_encoder_shapes_and_mlp_baseline():
    from edgelmm.models.item_encoder import ItemEncoder, ItemEncoderConfig

    for kind in ("qformer", "mlp"):
        enc = ItemEncoder(ItemEncoderConfig(cf_dim=16, lm_hidden=32, kind=kind, hidden=32, heads=2))
        out = enc(torch.randn(3, 16))
        assert out.shape == (3, 4, 32)
        assert not torch.allclose(out[0], out[1])  # the output depends on the CF vector
    with pytest.raises(SpecError, match="kind 'gru'"):
        ItemEncoderConfig(cf_dim=16, lm_hidden=32, kind="gru")


def test_phase1_losses_train_and_itg_mask_is_causal(small_data):
    from edgelmm.models.item_encoder import ItemEncoder, ItemEncoderConfig
    from edgelmm.models.tiny import byte_tokenizer
    from edgelmm.train.data.interactions import co_engaged_pairs
    from edgelmm.train.item_lm_objectives import CompactText, ItemTextPretraining, pretraining_batch

    torch.manual_seed(0)
    text = CompactText(small_data, byte_tokenizer())
    table = torch.randn(small_data.n_items, 16)
    module = ItemTextPretraining(ItemEncoder(ItemEncoderConfig(cf_dim=16, lm_hidden=32, hidden=32, heads=2)), table,
                                 text.size)
    pairs = co_engaged_pairs(small_data, np.arange(300))
    batch = pretraining_batch(pairs, text, np.random.default_rng(0), 16)
    states = module._joint(table[batch.item_ids], batch.text, batch.text_mask, causal=True)
    later = batch.text.clone()
    later[:, 12:] = 5
    changed = module._joint(table[batch.item_ids], later, batch.text_mask, causal=True)
    assert torch.allclose(states[:, : 4 + 12], changed[:, : 4 + 12], atol=1e-5)  # queries + earlier text unchanged
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        terms = module(batch)
        assert set(terms) == {"itc", "itg", "itm", "iic"}
        loss = sum(terms.values())
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.7 * first


# ----------------------------------------------------------------------------------------------------------------
# Phase-2 collation, the recipe, the eval


def test_collator_splices_k_slots_per_item_and_labels_only_the_answer(small_data):
    from edgelmm.models.loaded import CHATML_TEMPLATE
    from edgelmm.models.tiny import byte_tokenizer
    from edgelmm.train.data import item_chat

    tok = byte_tokenizer()
    collate = item_chat.ItemChatCollator(tokenizer=tok, chat_template=CHATML_TEMPLATE, num_item_tokens=3)
    convs = [item_chat.next_item(small_data, 0, 5), item_chat.describe(small_data, 7)]
    batch = collate(convs)
    assert batch.slot_mask.sum() == 3 * (len(convs[0].items) + 1) == 3 * len(batch.item_ids)
    assert batch.item_ids.tolist() == [*convs[0].items, 7]
    answer = batch.labels[0][batch.labels[0] != -100].tolist()
    assert tok.decode(answer) == small_data.items[small_data.histories[0][5]].title + "<|im_end|>\n"
    text_only = item_chat.next_item(small_data, 0, 5, items=False)
    assert "<item>" not in text_only.prompt and text_only.items == ()


def test_train_ilm_tiny_writes_model_and_logs_both_phases(tiny_ilm_run):
    from edgelmm.train import loop
    from edgelmm.train.item_lm import load

    records = loop.read_log(tiny_ilm_run / loop.LOG_FILE)
    assert [r["stage"] for r in records] == ["item-text"] * 3 + ["item-chat"] * 3
    assert set(records[0]["terms"]) == {"itc", "itg", "itm", "iic"}
    trained = load(tiny_ilm_run / "model")
    assert trained.cf.item.shape == (60, 16) and not set(trained.train_users) & set(trained.held_out_users)
    assert all(not p.requires_grad for p in trained.lm.model.parameters())


def test_ilm_recipe_refuses_a_trainable_lm_and_phase1_without_qformer():
    import dataclasses

    from edgelmm.specs import Trainability
    from edgelmm.train.item_lm_presets import mlp, tiny
    from edgelmm.train.specs import ComponentTraining

    spec = tiny()
    bad = dataclasses.replace(spec.stages[1], trainability=ComponentTraining(connector=Trainability.FULL,
                                                                             llm=Trainability.FULL))
    from edgelmm.train import item_lm

    with pytest.raises(SpecError, match="frozen"):
        item_lm._stage(_FakeState(), bad, 1)
    spec = dataclasses.replace(mlp(), base_model="tiny-ilm-mlp", stages=(tiny().stages[0],))
    with pytest.raises(SpecError, match="no Q-Former"):
        item_lm.setup(spec, None)


class _FakeState:
    spec = None


def test_title_scorer_with_shared_prompt_cache_matches_full_sequences(tiny_ilm_run):
    from edgelmm.evals import rec
    from edgelmm.train.data import item_chat
    from edgelmm.train.item_lm import load

    trained = load(tiny_ilm_run / "model")
    case = rec.cases(trained.data, trained.held_out_users, n=1, candidates=5)[0]
    scorer = rec.TitleScorer(trained.model, trained.lm, trained.data, items=True, num_item_tokens=4)
    fast = scorer(case)
    convs = [item_chat.Conversation(prompt=item_chat.history_prompt(trained.data, case.history), items=case.history,
                                    answer=trained.data.items[int(i)].title, task="next") for i in case.candidates]
    batch = scorer.collate(convs)
    with torch.no_grad():
        embeds = trained.model.embed(batch.input_ids, batch.slot_mask, batch.item_ids)
        logp = torch.log_softmax(trained.model.lm(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits, -1)
    for row, cand in enumerate(case.candidates):
        n = len(scorer.titles[int(cand)])
        pos = (batch.labels[row] != -100).nonzero().flatten()[:n]
        slow = float(sum(logp[row, j - 1, batch.labels[row, j]] for j in pos))
        assert fast[row] == pytest.approx(slow, abs=1e-3)
    text_only = rec.TitleScorer(trained.model, trained.lm, trained.data, items=False, num_item_tokens=4)
    assert not np.allclose(text_only(case), fast)  # the item tokens reach the LM


def test_eval_rec_cli_reports_every_system(tiny_ilm_run, capsys):
    import json

    from edgelmm.cli import main

    assert main(["eval", "--task", "rec", "--model", str(tiny_ilm_run / "model"), "--baselines", "-n", "8",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["systems"]) == {"ilm", "text-lm", "cf", "popularity"}
    assert all(m["users"] == 8 and 0 <= m["ndcg@10"] <= m["hr@10"] <= 1 for m in result["systems"].values())
    assert main(["eval", "--task", "rec", "--model", str(tiny_ilm_run / "model"), "--candidates", "1"]) == 2


def test_stop_then_resume_gives_the_same_model(tiny_ilm_run, tmp_path):
    """--stop-after-steps 4 stops in phase 2 (after its first step); --save-only writes that model; --resume
    finishes with the same tensors as the uninterrupted run."""
    import json

    from safetensors.torch import load_file

    from edgelmm.cli import main

    out = tmp_path / "run"
    args = ["train", "--recipe", "ilm", "--preset", "tiny", "--out", str(out), "--no-progress"]
    assert main([*args, "--stop-after-steps", "4"]) == 0
    assert not (out / "model").exists()
    assert main(["train", "--resume", str(out), "--save-only", "--no-progress"]) == 0  # the model as it stands
    stopped = json.loads((out / "model/provenance.json").read_text())["stopped_at"]
    assert stopped == {"stage": "item-chat", "stage_index": 1, "step": 1}
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    resumed, reference = load_file(str(out / "model/model.safetensors")), load_file(
        str(tiny_ilm_run / "model/model.safetensors"))
    assert resumed.keys() == reference.keys()
    assert all(torch.allclose(resumed[k], reference[k], atol=1e-6) for k in reference)

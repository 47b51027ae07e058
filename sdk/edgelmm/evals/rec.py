"""`edgelmm eval --task rec`: next-item recommendation for held-out users, HR@10 and NDCG@10.

For each held-out user (never seen by BPR or by the LM's training), the target is the last item of their history;
the prompt shows the HISTORY items before it (item_chat.history_prompt). The candidate set is the target plus
``candidates - 1`` items the user never engaged with, drawn by a seeded generator per user, so every system ranks
the same sets. Systems:

    ilm          the model: item tokens + titles in the prompt; candidates ranked by the LM's log-likelihood of
                 each title as the answer (sum over its tokens)
    text-lm      the same frozen LM reading the history titles as plain text, same likelihood ranking
    cf           CF alone: the held-out user folded in as the mean of their history's BPR item vectors
    popularity   engagements among the training users
    bundle:NAME  the ilm system through an exported bundle (``--rec-bundle DIR``): the runtime's Pipeline.score

With ``--calibrate`` the LM systems rank by PMI instead: the title's log-likelihood minus its log-likelihood after
NEUTRAL_PROMPT (``Calibrated``), which removes the frozen LM's prior for each title string.

HR@10: share of users whose target ranks in the top 10. NDCG@10: mean of 1 / log2(rank + 2) over users whose
target is in the top 10 (rank from 0); with one relevant item its ideal DCG is 1. Ties are broken at random
(seeded). ``se`` is the standard error over users.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelmm.errors import SpecError
from edgelmm.train.data import item_chat
from edgelmm.train.data.interactions import Interactions

TOP = 10
SYSTEMS = ("ilm", "text-lm", "cf", "popularity")
NEUTRAL_PROMPT = "What should I watch next?"
"""The next-item question without a history: the reference prompt of ``--calibrate`` (PMI) scoring."""


@dataclasses.dataclass(frozen=True, slots=True)
class RecCase:
    user: int
    history: tuple[int, ...]
    candidates: np.ndarray
    """int64 [C]; candidates[0] is the target."""


def cases(data: Interactions, users: np.ndarray, *, n: int, candidates: int, seed: int = 0) -> list[RecCase]:
    """The first ``n`` of ``users`` with their candidate sets (deterministic)."""
    out = []
    for user in users[:n]:
        h = data.histories[int(user)]
        rng = np.random.default_rng((seed, int(user)))
        pool = np.setdiff1d(np.arange(data.n_items), np.array(h))
        negatives = rng.choice(pool, size=min(candidates - 1, len(pool)), replace=False)
        out.append(RecCase(user=int(user), history=tuple(h[-1 - item_chat.HISTORY: -1]),
                           candidates=np.concatenate([[h[-1]], negatives]).astype(np.int64)))
    return out


def target_rank(scores: np.ndarray, rng: np.random.Generator) -> int:
    """Rank (0 = best) of scores[0] among scores, ties broken at random."""
    order = np.lexsort((rng.random(len(scores)), -scores))
    return int(np.nonzero(order == 0)[0][0])


def metrics(ranks: Sequence[int]) -> dict[str, float]:
    ranks = np.asarray(ranks)
    hit = (ranks < TOP).astype(np.float64)
    gain = np.where(ranks < TOP, 1.0 / np.log2(ranks + 2.0), 0.0)
    n = max(len(ranks), 1)
    return {"hr@10": float(hit.mean()), "ndcg@10": float(gain.mean()), "hr@10_se": float(hit.std() / math.sqrt(n)),
            "ndcg@10_se": float(gain.std() / math.sqrt(n)), "users": len(ranks)}


def evaluate(score: Callable[[RecCase], np.ndarray], rec_cases: list[RecCase], seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return metrics([target_rank(np.asarray(score(case), dtype=np.float64), rng) for case in rec_cases])


# ----------------------------------------------------------------------------------------------------------------
# LM likelihood scoring


class TitleScorer:
    """Log-likelihood of each candidate title as the assistant's answer, the prompt computed once per case.

    The prompt (with item tokens) runs through the LM once; its KV cache is repeated over the candidates, which
    then run together (right-padded): cost ~ prompt + candidates x title tokens instead of candidates x both.
    """

    def __init__(self, model: Any, lm: Any, data: Interactions, *, items: bool, num_item_tokens: int) -> None:
        """``lm``: the LoadedModel of the frozen LM (its tokenizer and chat template, as in training)."""
        self.model, self.data, self.items = model, data, items
        self.collate = item_chat.ItemChatCollator(tokenizer=lm.tokenizer, chat_template=lm.chat_template,
                                                  num_item_tokens=num_item_tokens)
        # title + end of turn, as Pipeline.score counts an answer (the template's newline after it is not a choice)
        self.titles = [list(lm.tokenizer(it.title, add_special_tokens=False)["input_ids"]) + self.collate.end_ids[:1]
                       for it in data.items]

    def __call__(self, case: RecCase) -> np.ndarray:
        prompt = item_chat.history_prompt(self.data, case.history, items=self.items)
        return self.scores(prompt, case.history if self.items else (), case.candidates)

    def prior(self) -> np.ndarray:
        """float64 [n_items]: every title's log-likelihood after NEUTRAL_PROMPT (no history, no items)."""
        return self.scores(NEUTRAL_PROMPT, (), np.arange(self.data.n_items))

    @torch.no_grad()
    def scores(self, prompt: str, items: Sequence[int], candidates: np.ndarray) -> np.ndarray:
        """float64 [len(candidates)]: log p(title + end of turn | prompt with ``items`` in its <item> slots)."""
        from transformers import DynamicCache

        ids, slots = self.collate.prompt_ids(prompt)
        input_ids = torch.tensor([ids])
        slot_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        slot_mask[0, slots] = True
        item_ids = torch.tensor(tuple(items), dtype=torch.int64)
        embeds = self.model.embed(input_ids, slot_mask, item_ids)
        lm = self.model.lm
        out = lm(inputs_embeds=embeds, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        titles = [self.titles[int(c)] for c in candidates]
        width, count, prefix = max(map(len, titles)), len(titles), len(ids)
        cand = torch.full((count, width), self.collate.slot_id, dtype=torch.int64)
        mask = torch.zeros((count, prefix + width), dtype=torch.int64)
        mask[:, :prefix] = 1
        for i, t in enumerate(titles):
            cand[i, : len(t)] = torch.tensor(t)
            mask[i, prefix: prefix + len(t)] = 1
        past = out.past_key_values
        cache = DynamicCache(ddp_cache_data=[(layer.keys.expand(count, -1, -1, -1).contiguous(),
                                              layer.values.expand(count, -1, -1, -1).contiguous())
                                             for layer in past.layers])
        positions = torch.arange(prefix, prefix + width)[None].expand(count, -1)
        kwargs = {_cache_kwarg(lm): cache}  # transformers 5 renamed past_key_values to cache
        logits = lm(input_ids=cand, attention_mask=mask, position_ids=positions, **kwargs).logits
        logp = torch.log_softmax(logits.float(), -1)
        scores = np.empty(count)
        for i, t in enumerate(titles):
            token_lp = [first[t[0]]] + [logp[i, j - 1, t[j]] for j in range(1, len(t))]
            scores[i] = float(torch.stack(token_lp).sum())
        return scores


class BundleTitleScorer:
    """The ilm system through an exported bundle (onnxruntime, no torch): Pipeline.score of every candidate title
    after the same prompt, items entering through the bundle's item encoder and CF table."""

    def __init__(self, bundle: str, data: Interactions, *, threads: int | None = None) -> None:
        from edgelmm.runtime import Pipeline

        self.pipe, self.data = Pipeline.load(bundle, threads=threads), data
        if self.pipe.item_table is None or self.pipe.item_table.shape[0] != data.n_items:
            raise SpecError(f"bundle '{bundle}' does not carry the {data.n_items}-item catalog of '{data.name}'")

    def __call__(self, case: RecCase) -> np.ndarray:
        prompt = item_chat.history_prompt(self.data, case.history, items=True)
        return self.pipe.score(prompt, [self.data.items[int(c)].title for c in case.candidates],
                               items=list(case.history))

    def prior(self) -> np.ndarray:
        return self.pipe.score(NEUTRAL_PROMPT, [it.title for it in self.data.items])


class Calibrated:
    """Domain-conditional PMI (Holtzman et al. 2021, "Surface Form Competition"): a title's log-likelihood after
    the user's prompt minus its log-likelihood after NEUTRAL_PROMPT. Raw likelihoods rank short, common-worded titles
    first whatever the history says; the difference keeps what the history (and its item tokens) adds."""

    def __init__(self, scorer: TitleScorer | BundleTitleScorer) -> None:
        self.scorer, self.reference = scorer, scorer.prior()

    def __call__(self, case: RecCase) -> np.ndarray:
        return self.scorer(case) - self.reference[case.candidates]


def _cache_kwarg(lm: Any) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


# ----------------------------------------------------------------------------------------------------------------
# The whole evaluation


def run(model_dir: str, *, n: int, candidates: int, systems: Sequence[str], progress: bool = False,
        bundles: Sequence[str] = (), threads: int | None = None, calibrate: bool = False) -> dict[str, Any]:
    """{system: metrics} for the ilm model in ``model_dir``, the baselines named in ``systems`` and each of
    ``bundles`` (exports of it, scored through the runtime as system ``bundle:NAME``, on the same cases).
    ``calibrate``: the LM systems (ilm, text-lm, bundles) rank by PMI (``Calibrated``) instead of raw likelihood."""
    from edgelmm.train.item_lm import load

    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SpecError(f"unknown rec system '{unknown[0]}'; valid: {', '.join(SYSTEMS)}")
    trained = load(model_dir, with_lm=bool(set(systems) & {"ilm", "text-lm"}))  # CF / popularity need no LM
    data = trained.data
    rec_cases = cases(data, trained.held_out_users, n=n, candidates=candidates)
    popularity = data.popularity(trained.train_users).astype(np.float64)

    def lm_scorer(items: bool) -> Callable[[RecCase], np.ndarray]:
        k = trained.model.items.encoder.config.num_item_tokens
        return TitleScorer(trained.model, trained.lm, data, items=items, num_item_tokens=k)

    scorers: dict[str, Callable[[], Callable[[RecCase], np.ndarray]]] = {
        "ilm": lambda: lm_scorer(True),
        "text-lm": lambda: lm_scorer(False),
        "cf": lambda: lambda case: trained.cf.scores(case.history, case.candidates),
        "popularity": lambda: lambda case: popularity[case.candidates],
    }
    for bundle in bundles:
        scorers[f"bundle:{Path(bundle).name}"] = lambda b=bundle: BundleTitleScorer(b, data, threads=threads)
    systems = [*systems, *(f"bundle:{Path(b).name}" for b in bundles)]
    results: dict[str, Any] = {"model": str(model_dir), "base_model": trained.meta["base_model"],
                               "dataset": data.name, "candidates": candidates,
                               "scoring": "pmi" if calibrate else "log-likelihood", "systems": {}}
    for name in systems:
        score = scorers[name]()
        if calibrate and isinstance(score, TitleScorer | BundleTitleScorer):  # the LM-likelihood systems
            score = Calibrated(score)
        if progress:
            from tqdm.auto import tqdm

            rec_cases_iter: Any = tqdm(rec_cases, desc=name, unit="user")
        else:
            rec_cases_iter = rec_cases
        results["systems"][name] = evaluate(score, list(rec_cases_iter))
    return results


def summary(results: dict[str, Any]) -> str:
    lines = [f"rec: {results['model']} ({results['base_model']}), {results['dataset']}, "
             f"{results['candidates']} candidates per held-out user, LM systems ranked by {results['scoring']}"]
    for name, m in results["systems"].items():
        lines.append(f"  {name:<11} HR@10 {m['hr@10']:.3f} ± {m['hr@10_se']:.3f}   "
                     f"NDCG@10 {m['ndcg@10']:.3f} ± {m['ndcg@10_se']:.3f}   ({m['users']} users)")
    return "\n".join(lines)

"""Accuracy re-checked on the finished bundle, inside the export: what each byte and millisecond saved cost.

    per graph   max |onnxruntime - torch fp32| over the validation cases (validate.py's parity run)
    decoder     top-1 next-token agreement with the fp32 torch model, teacher-forced over a fixed text
    bundle      task accuracy through the runtime (when the recipe names an eval task; edgelmm.evals runs it)

Everything lands in the manifest's ``accuracy`` section and in ``edgelmm export``'s output as a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

CHUNK = 256
"""Teacher-forced tokens per decoder call (chunked prefill of the bundle's own KV cache)."""


def fixed_text(name: str = "sklearn-descr") -> str:
    """The fixed English text set: scikit-learn's dataset descriptions (iris, diabetes, digits, linnerud, wine,
    breast cancer), concatenated in that order: offline, prose with numbers and tables."""
    from sklearn import datasets

    names = ("load_iris", "load_diabetes", "load_digits", "load_linnerud", "load_wine", "load_breast_cancer")
    return "\n\n".join(getattr(datasets, n)().DESCR for n in names)


def text_ids(tokenize: Callable[[str], list[int]], tokens: int, name: str = "sklearn-descr") -> np.ndarray:
    """The first ``tokens`` ids of the fixed text: int64 [tokens]."""
    return np.asarray(tokenize(fixed_text(name))[:tokens], np.int64)


def torch_argmax(model: Any, ids: np.ndarray) -> np.ndarray:
    """The fp32 torch model's greedy next token after every prefix of ``ids``: int64 [len(ids)]."""
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids)[None], use_cache=False).logits
    return logits[0].argmax(-1).numpy()


def bundle_argmax(pipe: Any, ids: np.ndarray, decoder: Any = None) -> np.ndarray:
    """The bundle's greedy next token after every prefix of ``ids`` (runtime Pipeline, teacher-forced); ``decoder``
    replaces the pipeline's own (the same graph on another provider)."""
    decoder = decoder or pipe.decoder
    decoder.reset()
    decoder.reserve(len(ids))
    out = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        out.append(decoder.forward(pipe.embed(chunk), all_logits=True).reshape(len(chunk), -1).argmax(-1))
    return np.concatenate(out)


def decoder_agreement(model: Any, pipe: Any, tokens: int, text_set: str = "sklearn-descr") -> dict[str, Any]:
    """Teacher-forced top-1 agreement of the bundle ``pipe`` with the fp32 torch ``model`` on the fixed text."""
    ids = text_ids(pipe.tokenizer.encode_trusted, min(tokens, pipe.max_context - 1), text_set)
    reference, ours = torch_argmax(model, ids), bundle_argmax(pipe, ids)
    return {"text_set": text_set, "tokens": int(len(ids)), "agreement": round(float((reference == ours).mean()), 4),
            "fp32_predicts_text": round(float((reference[:-1] == ids[1:]).mean()), 4)}


def graph_diffs(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Worst max abs diff vs torch per graph over the export's parity cases."""
    worst: dict[str, float] = {}
    for case in cases:
        worst[case["graph"]] = max(worst.get(case["graph"], 0.0), float(case["max_abs_diff"]))
    return worst


def format_accuracy(accuracy: dict[str, Any]) -> str:
    """The accuracy section as a markdown table (one row per check)."""
    rows = ["| check | value | detail |", "|---|---:|---|"]
    for graph, diff in accuracy.get("max_abs_diff", {}).items():
        precision = accuracy.get("precision", {}).get(graph, "")
        rows.append(f"| {graph} max abs diff vs torch fp32 | {diff:.3g} | {precision} |")
    agreement = accuracy.get("decoder_agreement")
    if agreement:
        rows.append(f"| decoder top-1 agreement vs fp32 | {agreement['agreement']:.1%} |"
                    f" teacher-forced, {agreement['tokens']} tokens of {agreement['text_set']} |")
    task = accuracy.get("task")
    if task:
        rows.append(f"| task accuracy ({task['task']} [{task['split']}]) | {task['accuracy']:.1%} |"
                    f" {task['correct']}/{task['n']} examples through the runtime |")
    for provider, result in accuracy.get("providers", {}).items():
        rows.append(f"| runs on {provider} | {'yes' if result.get('ok') else 'no'} | {result.get('detail', '')} |")
        for graph, entry in result.get("graphs", {}).items():
            shown = {k: v for k, v in entry.items() if k != "ok"}
            rows.append(f"| {graph} on {provider} | {'yes' if entry['ok'] else 'no'} | {shown} |")
    return "\n".join(rows)


HTP_SIMULATOR = {"soc_model": 60}
"""QNN options for the x86-64 HTP simulator: it needs a SoC id to be exact (shared/docs/pitfalls.md)."""
HTP_TOKENS = 32
"""Teacher-forced positions compared between the HTP and the CPU EP (the x86 simulator runs a step slowly)."""


def provider_checks(root: Any, manifest: Any, feeds: dict[Any, list[dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Each static graph on the QNN HTP (simulator on x86-64) with CPU fallback disabled, against the CPU EP on the
    same inputs: did every node run there, and how close are the outputs (decoder: argmax-identical positions).

    ``feeds``: role -> inputs (the calibration feeds). Returns {"qnn-htp": {...}, "cpu": {...}} for the manifest."""
    from edgelmm.runtime.profile import ProviderSpec, QnnOptions
    from edgelmm.runtime.sessions import SessionConfig, open_session

    results: dict[str, Any] = {"cpu": {"ok": True, "detail": "every graph (the export's parity cases ran there)"}}
    per_graph: dict[str, Any] = {}
    strict = ProviderSpec(qnn=QnnOptions(**HTP_SIMULATOR), strict=True)
    for role, role_feeds in feeds.items():
        path = root / manifest.graphs[role].file
        try:
            qnn = open_session(path, SessionConfig(intra_op_threads=1), (strict,))
        except Exception as exc:  # ProviderError: the reason the plug-in refused, one line
            per_graph[str(role)] = {"ok": False, "detail": str(exc)[:300]}
            continue
        cpu = open_session(path, SessionConfig(intra_op_threads=1), (ProviderSpec.cpu_default(),))
        feed = role_feeds[0]
        ours, reference = qnn.session.run(None, feed)[0], cpu.session.run(None, feed)[0]
        entry: dict[str, Any] = {"ok": True, "placement": qnn.placement,
                                 "max_abs_diff_vs_cpu": round(float(np.abs(ours - reference).max()), 5)}
        if str(role) == "decoder" and manifest.kv_cache.layout == "static-buffer":
            entry.update(_htp_vs_cpu_argmax(root, manifest, qnn.session))
        per_graph[str(role)] = entry
    ok = bool(per_graph) and all(v["ok"] for v in per_graph.values())
    results["qnn-htp"] = {"ok": ok, "options": HTP_SIMULATOR, "graphs": per_graph,
                          "detail": "onnxruntime-qnn HTP (x86-64 simulator here), CPU fallback disabled"}
    return results


def _htp_vs_cpu_argmax(root: Any, manifest: Any, session: Any) -> dict[str, Any]:
    """The static decoder on the HTP vs the CPU EP, teacher-forced over the fixed text: argmax-identical share."""
    from edgelmm.runtime.decoding import StaticBufferDecoder
    from edgelmm.runtime.pipeline import Pipeline

    pipe = Pipeline.load(root, threads=1)
    ids = text_ids(pipe.tokenizer.encode_trusted, min(HTP_TOKENS, pipe.max_context - 1))
    htp = StaticBufferDecoder(session, manifest.kv_cache, manifest.model.hidden_size)
    same = bundle_argmax(pipe, ids) == bundle_argmax(pipe, ids, htp)
    return {"argmax_identical_vs_cpu": round(float(same.mean()), 4), "positions": int(len(ids))}

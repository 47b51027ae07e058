"""The peers benchmark's plumbing: the edgelmm driver's record, the interleaved summary, ratios and table.
(No timing is judged here: the figures come from `make bench-peers`.)"""

import json
import sys

import pytest

from edgelmm.bench import peers


def test_edgelmm_driver_prints_one_protocol_record(tiny_lm_bundle, tmp_path, capsys):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(list(range(40, 72))))
    assert peers.main(["drive", "--model", str(tiny_lm_bundle), "--prompt-ids", str(ids), "--new-tokens", "12"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(record["tokens"]) == 12 and record["kv_layout"] == "shared-buffer"
    for key, _ in peers.METRICS:
        assert record[key] > 0, key


def _rows():
    rows = []
    for r, (a, b) in enumerate(((100.0, 50.0), (90.0, 60.0), (120.0, 40.0))):
        for name, speed in (("edgelmm int4", a), ("peer int4", b)):
            rows.append({"round": r, "system": name, "prefill_tok_s": 2 * speed, "decode_tok_s": speed,
                         "ttft_ms": 10.0, "peak_rss_mb": 200.0 if name == "peer int4" else 150.0, "model_mb": 90.0})
    return rows


def test_summary_takes_medians_and_per_round_ratios():
    comparisons = [{"label": "decode", "a": "edgelmm int4", "b": "peer int4", "metric": "decode_tok_s",
                    "target": ">= 1.0"},
                   {"label": "rss", "a": "edgelmm int4", "b": "peer int4", "metric": "peak_rss_mb", "target": "<= 1.0"}]
    summary = peers.summarise(_rows(), comparisons)
    assert summary["systems"]["edgelmm int4"]["decode_tok_s"] == {"median": 100.0, "min": 90.0, "max": 120.0}
    decode = summary["ratios"][0]
    assert (decode["median"], decode["min"], decode["max"]) == (2.0, 1.5, 3.0)  # ratios per round: 2, 1.5, 3
    assert summary["ratios"][1]["median"] == pytest.approx(0.75)
    text = peers.table(summary)
    assert "| edgelmm int4 | 200 [180-240] | 100 [90-120] |" in text
    assert "| decode | 2.00 [1.50-3.00] | >= 1.0 |" in text


def test_run_rounds_interleaves_fresh_processes_and_checks_token_counts(tmp_path):
    fake = tmp_path / "fake_driver.py"
    fake.write_text(
        "import json, os, sys\n"
        "n = int(sys.argv[sys.argv.index('--new-tokens') + 1])\n"
        "print(json.dumps({'prefill_tok_s': 1.0, 'decode_tok_s': float(os.getpid()), 'ttft_ms': 1.0,"
        " 'peak_rss_mb': 1.0, 'model_mb': 1.0, 'tokens': [0] * (n - int(sys.argv[1]))}))\n")
    ids = tmp_path / "ids.json"
    ids.write_text("[1, 2, 3]")
    systems = [{"name": "a", "cmd": [sys.executable, str(fake), "0"]}, {"name": "b", "cmd": [sys.executable, str(fake), "0"]}]
    rows = peers.run_rounds(systems, ids, 4, 2, 2, log=lambda _: None)
    assert [r["system"] for r in rows] == ["a", "b", "a", "b"]
    assert len({r["decode_tok_s"] for r in rows}) == 4  # four processes, four pids
    with pytest.raises(RuntimeError, match="generated 3 tokens, not 4"):
        peers.run_rounds([{"name": "short", "cmd": [sys.executable, str(fake), "1"]}], ids, 4, 2, 1, log=lambda _: None)

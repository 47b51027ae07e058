"""Bench records: md / csv / jsonl forms, the JSON last line, saving and re-reading, comparisons, the CLI."""

import csv
import dataclasses
import io
import json

import pytest

from edgelmm.bench.compare import compare, labels_for, to_markdown
from edgelmm.bench.report import FORMATS, load_record, parse_record, save_record, to_markdown as record_markdown
from edgelmm.bench.runner import bench
from edgelmm.cli import main
from edgelmm.errors import InputError

from ..test_cli import assert_bad_input, run_cli


@pytest.fixture(scope="module")
def record(tiny_bundle):
    return bench(tiny_bundle, "img,pp8,tg4", reps=2, warmup=0, threads=1)


def scaled(record, factor, label):
    """The same record with every time multiplied by ``factor`` (a slower or faster 'device')."""
    rows = tuple(dataclasses.replace(r, median_ms=r.median_ms * factor) for r in record.rows)
    return dataclasses.replace(record, rows=rows, meta=dataclasses.replace(record.meta, label=label))


def test_formats_hold_one_row_per_test(record):
    md = record_markdown(record).splitlines()
    table = [line for line in md if line.startswith("| ") and not line.startswith("| test")]
    assert [line.split("|")[1].strip() for line in table] == ["img", "pp8", "tg4"]
    rows = list(csv.DictReader(io.StringIO(FORMATS["csv"](record))))
    assert [r["test"] for r in rows] == ["img", "pp8", "tg4"] and rows[1]["cpu_info"] == record.meta.cpu_info
    lines = [json.loads(line) for line in FORMATS["jsonl"](record).splitlines()]
    assert [line["test"] for line in lines] == ["img", "pp8", "tg4"]
    assert all(line["onnxruntime_version"] == record.meta.onnxruntime_version for line in lines)


def test_record_round_trips_through_a_file_and_captured_stdout(record, tmp_path):
    save_record(record, tmp_path / "a.json")
    assert load_record(tmp_path / "a.json") == record
    (tmp_path / "out.txt").write_text(record_markdown(record) + "\n" + record.to_json() + "\n\n")
    assert load_record(tmp_path / "out.txt") == record


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (None, "does not exist"),
        ("| a table only |\n", "holds no JSON record"),
        ('{"schema": "something-else"}', "is not an edgelmm bench record"),
        ('{"schema": "edgelmm-bench", "schema_version": 99}', "schema_version 99 is not 1"),
        ('{"schema": "edgelmm-bench", "schema_version": 1, "meta": {}, "rows": []}', "meta.bundle: required key"),
    ],
)
def test_bad_records_are_refused(tmp_path, content, pattern):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=pattern):
        load_record(path)


def test_parse_record_rejects_unknown_fields(record):
    data = json.loads(record.to_json())
    data["rows"][0]["mean_ns"] = 1
    with pytest.raises(InputError, match="mean_ns: unknown key"):
        parse_record(data, where="x")


def test_compare_gives_speed_ratios_against_the_baseline(record):
    slow = scaled(record, 2.0, "slow device")
    fast = scaled(record, 0.5, "fast device")
    partial = dataclasses.replace(fast, rows=fast.rows[1:])
    comparison = compare([record, slow, partial])
    assert comparison.labels[1:] == ("slow device", "fast device")
    assert [r.test for r in comparison.rows] == ["img", "pp8", "tg4"]
    assert comparison.rows[0].ratios() == (1.0, 0.5, None)
    assert comparison.rows[1].ratios() == pytest.approx((1.0, 0.5, 2.0), rel=1e-3)
    assert comparison.differs["label"] == ("", "slow device", "fast device")
    md = to_markdown(comparison)
    assert "| pp8 |" in md and "0.50x" in md and "2.00x" in md
    out = json.loads(comparison.to_json())
    assert out["rows"][1]["speedup_vs_baseline"] == pytest.approx([1.0, 0.5, 2.0], rel=1e-3)


def test_labels_are_unique_and_compare_needs_two(record):
    assert labels_for([record, record])[0].startswith("#1 ") and labels_for([record, record])[1].startswith("#2 ")
    with pytest.raises(InputError, match="two or more records"):
        compare([record])


def test_cli_json_is_one_line_and_md_ends_with_it(capsys, tiny_bundle, tmp_path):
    code, out, err = run_cli(capsys, "bench", "--bundle", str(tiny_bundle), "--tests", "pp8,tg2", "--reps", "1",
                             "--warmup", "0", "--threads", "1", "--json", "--save", str(tmp_path / "a.json"))
    assert code == 0 and err == ""
    assert len(out.splitlines()) == 1 and json.loads(out)["rows"][1]["test"] == "tg2"
    (tmp_path / "captured.txt").write_text(out)
    assert load_record(tmp_path / "a.json") == load_record(tmp_path / "captured.txt")
    code, out, _ = run_cli(capsys, "bench", "--bundle", str(tiny_bundle), "--tests", "pp8", "--reps", "2",
                           "--threads", "1", "--label", "second")
    lines = out.strip().splitlines()
    assert code == 0 and lines[-2].startswith("| pp8 |") and json.loads(lines[-1])["meta"]["label"] == "second"
    (tmp_path / "b.txt").write_text(out)
    code, out, err = run_cli(capsys, "bench", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.txt"),
                             "--plot", str(tmp_path / "cmp.png"))
    assert code == 0 and "| pp8 |" in out and json.loads(out.splitlines()[-1])["labels"][1] == "second"
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_is_one_line_with_exit_2(capsys, tiny_bundle, tmp_path):
    code, out, err = run_cli(capsys, "bench", "--bundle", str(tiny_bundle), "--tests", "pp99999")
    assert_bad_input(code, err, "do not fit the bundle's max context")
    assert out == ""
    code, _, err = run_cli(capsys, "bench", "--compare", str(tmp_path / "missing.json"), str(tmp_path / "x.json"))
    assert_bad_input(code, err, "missing.json' does not exist")
    with pytest.raises(SystemExit):
        main(["bench", "--bundle", str(tiny_bundle), "--compare", "a.json"])

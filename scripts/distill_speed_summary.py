"""Summarise scripts/distill_speed.sh records: per round, student / teacher decode tok/s (tg64 median) and TTFT
(e2e median); then the median and range over rounds of those per-round ratios.

    python scripts/distill_speed_summary.py out/kd-speed teacher-int4 student7-int4 student8-int4
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def figures(path: Path) -> tuple[float, float]:
    rows = {r["test"]: r for r in json.loads(path.read_text().strip().splitlines()[-1])["rows"]}
    return rows["tg64"]["tok_s_median"], rows["e2e"]["stages"]["ttft_ms"]


def main(directory: str, teacher: str, *students: str) -> None:
    rounds = sorted(int(p.stem.rsplit("-", 1)[1]) for p in Path(directory).glob(f"{teacher}-*.json"))
    base = {r: figures(Path(directory) / f"{teacher}-{r}.json") for r in rounds}
    tok = [v[0] for v in base.values()]
    ttft = [v[1] for v in base.values()]
    print(f"| bundle | decode tok/s (median of {len(rounds)} rounds) | TTFT ms | decode speed-up vs teacher "
          f"(median [min, max] of per-round ratios) | TTFT ratio student / teacher |")
    print("|---|---|---|---|---|")
    print(f"| {teacher} | {statistics.median(tok):.1f} | {statistics.median(ttft):.0f} | 1 | 1 |")
    for student in students:
        mine = {r: figures(Path(directory) / f"{student}-{r}.json") for r in rounds}
        speed = [mine[r][0] / base[r][0] for r in rounds]
        ttft_ratio = [mine[r][1] / base[r][1] for r in rounds]
        print(f"| {student} | {statistics.median(m[0] for m in mine.values()):.1f} "
              f"| {statistics.median(m[1] for m in mine.values()):.0f} "
              f"| {statistics.median(speed):.2f} [{min(speed):.2f}, {max(speed):.2f}] "
              f"| {statistics.median(ttft_ratio):.2f} [{min(ttft_ratio):.2f}, {max(ttft_ratio):.2f}] |")


if __name__ == "__main__":
    main(*sys.argv[1:])

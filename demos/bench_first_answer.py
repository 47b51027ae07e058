"""Time from launching ``edgelmm demo`` to its first answer in a browser. Run from the repository root:

    flock /tmp/edgelmm-timing.lock python demos/bench_first_answer.py --bundle bundles/smol-vqa [--rounds 5]

Each round starts a fresh ``edgelmm demo`` process (Python and Gradio imports, bundle verification with sha256,
onnxruntime sessions), then, in a headless Chromium that is already open (as a user's browser is), loads the page,
uploads the example image, asks the example question and waits for the answer. Phases are timed from the process
start: console ready, page usable, first answer text visible, answer complete (its metrics shown). Prints a
markdown table of medians and, as the last line, one JSON record. ``--screenshot PATH`` saves the last round's page.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demos.browser import DemoPage, DemoServer, chromium  # noqa: E402 - after the path is set

PHASES = ("ready_s", "page_s", "first_text_s", "answer_s")
LABELS = {
    "ready_s": "console says it is serving",
    "page_s": "page loaded and usable",
    "first_text_s": "first answer text visible",
    "answer_s": "answer complete, metrics shown",
}


def one_round(browser: object, args: argparse.Namespace, screenshot: Path | None) -> dict[str, float]:
    extra = ["--threads", str(args.threads)] if args.threads else []
    with DemoServer(args.bundle, *extra) as server:
        start = server.started_at
        record = {"ready_s": server.ready_at - start}
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        demo = DemoPage(page, server.url, timeout_s=600)
        record["page_s"] = time.perf_counter() - start
        demo.upload(args.image)
        demo.ask(args.question)
        page.wait_for_function(
            "Array.from(document.querySelectorAll('#chat [data-testid=\"bot\"]')).some(el => el.innerText.trim())",
            polling="raf",
        )
        record["first_text_s"] = time.perf_counter() - start
        demo.wait_answers(1)
        record["answer_s"] = time.perf_counter() - start
        record["answer"] = demo.answers()[0]
        record["metrics"] = demo.metrics()[0]
        if screenshot is not None:
            demo.screenshot(screenshot, full_page=False, palette=True)
        page.close()
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="bundle directory (e.g. bundles/smol-vqa)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads per graph, passed to edgelmm demo")
    p.add_argument("--image", default=str(REPO / "demos" / "examples" / "scene.png"))
    p.add_argument("--question", default="What shapes and colours are in this picture?")
    p.add_argument("--screenshot", type=Path, default=None, help="save the last round's page as this PNG")
    args = p.parse_args()

    records = []
    with chromium() as browser:
        for i in range(args.rounds):
            shot = args.screenshot if i == args.rounds - 1 else None
            records.append(one_round(browser, args, shot))
            print(f"round {i + 1}: " + " ".join(f"{k} {records[-1][k]:.2f}" for k in PHASES), file=sys.stderr)
    medians = {k: statistics.median(r[k] for r in records) for k in PHASES}
    print(f"edgelmm demo, launch to first answer: {args.bundle}, {args.rounds} rounds, {args.threads} threads\n")
    print("| from process start to | median s | min s | max s |\n|---|---:|---:|---:|")
    for k in PHASES:
        values = [r[k] for r in records]
        print(f"| {LABELS[k]} | {medians[k]:.2f} | {min(values):.2f} | {max(values):.2f} |")
    print(f"\nlast answer's metrics: {records[-1]['metrics']}")
    print(json.dumps({"bundle": str(args.bundle), "rounds": args.rounds, "threads": args.threads,
                      "median": medians, "rounds_s": [{k: r[k] for k in PHASES} for r in records]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

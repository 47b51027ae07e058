"""Soak: many generations with images through one Pipeline; resident memory must stay flat and nothing may fail.

    nice -n 19 python -m edgelmm.testing.soak --bundle bundles/smol-vqa --generations 1000 --threads 1

Inputs rotate through every kind the API takes (paths, bytes, PIL images of several modes and sizes, numpy arrays),
chat and raw prompts, greedy and seeded sampling, stop strings and streaming; every 25th call is a bad input
(unreadable image, oversize prompt) that must be refused, so error paths are soaked too. RSS is read from
/proc/self/statm after load, after a warm-up (allocator arenas and onnxruntime's memory pools settle there), every
100 generations and at the end; growth is end vs warm-up. Runtime only (no torch): it runs wherever a bundle runs.
The last stdout line is one JSON document.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from edgelmm.errors import EdgelmmError, InputError
from edgelmm.runtime import Pipeline
from edgelmm.runtime.metrics import current_rss_mb

MAX_GROWTH_PCT = 5.0
PROMPTS = (
    "What is in the picture?",
    "Describe the colours.",
    "How many shapes are there?",
    "Is there a circle?",
    "Answer in one word: what colour is the background?",
)


def scene(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(16, 320)), int(rng.integers(16, 240)))
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        box = (x, y, x + int(rng.integers(4, 60)), y + int(rng.integers(4, 60)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def image_input(i: int, folder: Path) -> Any:
    """The i-th image, as one of the input kinds the API accepts."""
    image = scene(i)
    kind = i % 5
    if kind == 0:
        path = folder / f"img{i % 7}.png"
        image.save(path)
        return path
    if kind == 1:
        buf = io.BytesIO()
        image.save(buf, format="JPEG")
        return buf.getvalue()
    if kind == 2:
        return image.convert("RGBA")
    if kind == 3:
        return np.asarray(image)
    return image.convert("P")


def one_call(pipe: Pipeline, i: int, folder: Path, rng: np.random.Generator) -> str:
    """Run the i-th generation; return "ok", or "refused" for the planned bad inputs."""
    vision = pipe.manifest.has_vision
    if i % 25 == 24:  # planned bad input: must be refused with an EdgelmmError, and must not leak
        bad = [folder / "missing.png"] if vision and i % 50 == 49 else []
        try:
            pipe.generate("x" * (pipe.manifest.text.max_context * 8) if not bad else "hi", images=bad)
        except InputError:
            return "refused"
        raise AssertionError(f"generation {i}: a bad input was accepted")
    images = [image_input(i + k, folder) for k in range(1 + (i % 7 == 0))] if vision else []
    pieces: list[str] = []
    options: dict[str, Any] = {"max_new_tokens": int(rng.integers(1, 17)), "chat": i % 11 != 0}
    if i % 3 == 0:
        options.update(temperature=0.8, top_k=40, top_p=0.9, seed=i)
    if i % 4 == 0:
        options.update(stream=pieces.append, stop=("\n\n",))
    result = pipe.generate(PROMPTS[i % len(PROMPTS)], images=images, **options)
    if options.get("stream") and "".join(pieces) != result.text:
        raise AssertionError(f"generation {i}: streamed text differs from the result")
    return "ok"


def soak(bundle: Path, generations: int, *, threads: int | None, warmup: int = 20) -> dict[str, Any]:
    pipe = Pipeline.load(bundle, threads=threads)
    rss = {"after_load": current_rss_mb()}
    samples: list[tuple[int, float]] = []
    counts = {"ok": 0, "refused": 0}
    errors: list[str] = []
    rng = np.random.default_rng(0)
    objects_warm = None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgelmm-soak-") as tmp:
        for i in range(generations):
            try:
                counts[one_call(pipe, i, Path(tmp), rng)] += 1
            except (EdgelmmError, AssertionError) as exc:
                errors.append(f"{i}: {type(exc).__name__}: {exc}")
            if i + 1 == warmup:
                gc.collect()
                rss["after_warmup"] = current_rss_mb()
                objects_warm = len(gc.get_objects())
            if (i + 1) % 100 == 0:
                samples.append((i + 1, round(current_rss_mb(), 1)))
                print(f"[soak] {i + 1}/{generations} rss {samples[-1][1]} MB errors {len(errors)}", file=sys.stderr)
    gc.collect()
    rss["end"] = current_rss_mb()
    warm = rss.get("after_warmup", rss["after_load"])
    growth = 100.0 * (rss["end"] - warm) / warm
    return {
        "bundle": str(bundle),
        "generations": generations,
        "ok": counts["ok"],
        "refused_as_planned": counts["refused"],
        "errors": len(errors),
        "first_errors": errors[:5],
        "seconds": round(time.perf_counter() - start, 1),
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_growth_pct": round(growth, 2),
        "rss_samples": samples,
        "python_objects_growth": None if objects_warm is None else len(gc.get_objects()) - objects_warm,
        "passed": not errors and growth <= MAX_GROWTH_PCT,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelmm.testing.soak", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--generations", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per graph")
    args = p.parse_args(argv)
    report = soak(args.bundle, args.generations, threads=args.threads)
    r = report["rss_mb"]
    print(
        f"{report['generations']} generations ({report['ok']} ok, {report['refused_as_planned']} refused as planned,"
        f" {report['errors']} errors) in {report['seconds']} s; RSS {r['after_load']} MB after load,"
        f" {r.get('after_warmup')} MB after warm-up, {r['end']} MB at the end: {report['rss_growth_pct']:+.2f}%"
    )
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

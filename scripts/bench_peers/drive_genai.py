"""onnxruntime-genai driver: one greedy generation of a builder output folder; min_length keeps eos from ending it."""

import json
import time
from pathlib import Path

import onnxruntime_genai as og
from _protocol import WARMUP_TOKENS, emit, parse


def pin_threads(folder: Path, threads: int) -> None:
    """genai reads session options only from genai_config.json: pin intra-op threads there (our own copy)."""
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    if options.get("intra_op_num_threads") != threads or options.get("inter_op_num_threads") != 1:
        options.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        path.write_text(json.dumps(config, indent=4))


def generate(model: og.Model, ids: list[int], n: int) -> tuple[list[int], float, float, float]:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(ids)
    generator.generate_next_token()
    tokens = [int(generator.get_next_tokens()[0])]
    first = time.perf_counter()
    while len(tokens) < n:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, start, first, time.perf_counter()


def main() -> None:
    args = parse()
    folder = Path(args.model)
    pin_threads(folder, args.threads)
    model = og.Model(str(folder))
    generate(model, args.ids, WARMUP_TOKENS)
    tokens, start, first, end = generate(model, args.ids, args.new_tokens)
    emit(len(args.ids), tokens, start, first, end, [f for f in folder.iterdir() if ".onnx" in f.name])


if __name__ == "__main__":
    main()

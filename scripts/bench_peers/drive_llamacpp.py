"""llama.cpp (llama-cpp-python) driver: one greedy generation of a GGUF, flash attention on, eos never stops it."""

import time
from pathlib import Path

import numpy as np
from _protocol import WARMUP_TOKENS, emit, parse
from llama_cpp import Llama


def generate(llm: Llama, ids: list[int], n: int) -> tuple[list[int], float, float, float]:
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    tokens = [int(np.argmax(llm.scores[llm.n_tokens - 1]))]
    first = time.perf_counter()
    while len(tokens) < n:
        llm.eval([tokens[-1]])
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    return tokens, start, first, time.perf_counter()


def main() -> None:
    args = parse()
    llm = Llama(model_path=args.model, n_ctx=len(args.ids) + args.new_tokens + 16, n_batch=len(args.ids),
                n_threads=args.threads, n_threads_batch=args.threads, flash_attn=True, verbose=False)
    generate(llm, args.ids, WARMUP_TOKENS)
    tokens, start, first, end = generate(llm, args.ids, args.new_tokens)
    emit(len(args.ids), tokens, start, first, end, [Path(args.model)])


if __name__ == "__main__":
    main()

"""llama.cpp (llama-cpp-python) driver: one greedy generation of a GGUF, flash attention on, eos never stops it."""

import time
from pathlib import Path

import llama_cpp
import numpy as np
from _protocol import WARMUP_TOKENS, emit, parse
from llama_cpp import Llama


def last_logits(llm: Llama) -> np.ndarray:
    """The logits of the last evaluated position, read in place (llama-cpp-python >= 0.3.3x keeps no scores
    unless logits_all, which would compute the LM head for every prompt row)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))


def generate(llm: Llama, ids: list[int], n: int) -> tuple[list[int], float, float, float]:
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    tokens = [int(np.argmax(last_logits(llm)))]
    first = time.perf_counter()
    while len(tokens) < n:
        llm.eval([tokens[-1]])
        tokens.append(int(np.argmax(last_logits(llm))))
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

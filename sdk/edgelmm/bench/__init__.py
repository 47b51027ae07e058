"""``edgelmm bench``: llama-bench-style device benchmarks of a bundle (runtime-only: never torch or onnx).

``runner`` times the tests, ``report`` holds the record schema and its md / csv / jsonl forms, ``compare`` puts saved
records side by side, ``plots`` draws them ([bench] extra), ``provenance`` describes the machine and the code.
"""

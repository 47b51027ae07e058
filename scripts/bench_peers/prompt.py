"""The benchmark prompt: the first 128 SmolLM2 token ids of scikit-learn's wine dataset description (fixed, offline).

Usage: prompt.py TOKENIZER_JSON OUT_JSON [N]
"""

import json
import sys

from sklearn.datasets import load_wine
from tokenizers import Tokenizer

n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
ids = Tokenizer.from_file(sys.argv[1]).encode(load_wine().DESCR, add_special_tokens=False).ids[:n]
assert len(ids) == n, f"the text gives only {len(ids)} tokens"
with open(sys.argv[2], "w") as f:
    json.dump(ids, f)

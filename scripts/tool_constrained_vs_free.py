"""Free vs constrained decoding of a tool-selection bundle on the same test examples (one load), one JSON line each.

    PYTHONPATH=sdk python scripts/tool_constrained_vs_free.py BUNDLE N
"""
import json
import sys

from edgelmm.evals.runner import BundleAnswerer, evaluate

n = int(sys.argv[2])
answerer = BundleAnswerer(sys.argv[1], threads=1)
for constrained in (False, True):
    report = evaluate(answerer, "tool-selection", split="test", n=n, batch_size=n, constrained=constrained)
    print(json.dumps(report.to_dict()), flush=True)

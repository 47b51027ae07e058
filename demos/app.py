"""Run the Gradio demo directly: ``python demos/app.py --bundle bundles/smol-vqa [--profile P] [--port N]``.

The same as ``edgelmm demo``; the app lives in ``edgelmm.demo`` (gradio + ``edgelmm.runtime``, never torch).
"""

import sys

from edgelmm.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))

"""`edgelmm demo`: chat with a bundle about images in your browser, served on 127.0.0.1, offline, torch-free.

examples:
  edgelmm demo --bundle bundles/smol-vqa
  edgelmm demo --bundle bundles/smol-vqa --profile laptop-x86 --port 7861
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edgelmm._extras import require
from edgelmm.errors import BadInputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgelmm demo", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="bundle directory written by `edgelmm export`")
    p.add_argument("--profile", default=None, help="device profile to load with (name or YAML path; default: none)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default: 7860)")
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the demo to your network)",
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per graph (default: onnxruntime's)")
    p.add_argument(
        "--profiles-dir", type=Path, default=None, metavar="DIR",
        help="offer the device profiles (*.yaml) of DIR in the picker (default: the shipped device_profiles/)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    # Offline before gradio is imported: no telemetry, no hub; gradio reads these at import and launch.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require("gradio", "demo")
    from edgelmm.demo import app as ui
    from edgelmm.demo.engine import Engine

    engine = Engine(args.bundle, profile=args.profile, threads=args.threads)
    examples = ui.load_examples()
    profiles = ui.profile_choices(args.profiles_dir or ui.PROFILES_DIR, engine.profile)
    demo = ui.build_app(engine, examples=examples, profiles=profiles)
    try:
        url = ui.serve(demo, host=args.host, port=args.port, allowed_paths=[ui.EXAMPLES_DIR])
    except OSError:  # gradio: "Cannot find empty port in range: N-N. You can specify..."
        raise BadInputError(
            f"cannot serve on {args.host}:{args.port}: the port is in use or the address is not this machine's;"
            " pick another --port or --host"
        ) from None
    m = engine.manifest
    print(
        f"edgelmm demo: {m.model.name} from {engine.bundle} (profile: {engine.profile or 'none'}) is running on {url}\n"
        f"  offline: listening on {args.host} only, analytics off, no share link."
        f" Open {url} in your browser; Ctrl+C stops it.",
        flush=True,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: --host {args.host} makes the demo reachable from other machines", file=sys.stderr)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0

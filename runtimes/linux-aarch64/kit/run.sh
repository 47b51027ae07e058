#!/usr/bin/env bash
# Answer a prompt with a bundle of this kit:
#   ./run.sh [BUNDLE] --prompt "What is in the picture?" [--image photo.png] [--max-new-tokens 32] [--json]
# BUNDLE is a name under bundles/ (default: the first).
exec "$(dirname "${BASH_SOURCE[0]}")/edgelmm.sh" --kit run "$@"

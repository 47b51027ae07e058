"""`python -m edgelmm` is the same as the `edgelmm` console script."""

import sys

from edgelmm.cli import main

sys.exit(main())

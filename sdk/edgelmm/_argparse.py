"""An argparse parser whose usage errors are one-line SpecErrors (stdlib only).

Plain argparse prints the whole usage block and calls ``sys.exit(2)`` from inside the parser; every verb uses this
subclass instead, so ``edgelmm.cli`` prints bad flags like any other bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from edgelmm.errors import SpecError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SpecError(f"{self.prog}: {message} (see `{self.prog} --help`)")

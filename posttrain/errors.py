"""The one error type for a user's mistake: bad params, bad input rows, an unreachable hub.

Stages raise `UserError` with a message naming the file, row, field or parameter; `run_main`
prints it and exits with status 2, so a user's mistake never ends in a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix: the message says what and where."""


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning a `UserError` into one line on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

"""The one error type for a user's mistake: bad params, bad input rows, an unreachable hub.

Stages raise `UserError` with a message naming the file, row, field or parameter; `run_main`
prints it and exits with status 2, so a user's mistake never ends in a traceback. A write refused by a
full disk or a read-only folder ends the same way, naming the file.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix: the message says what and where."""


# A full disk, a quota, a read-only or unwritable folder: the machine's state, not a bug, wherever the
# write happens (a model's save_pretrained as much as a JSONL file).
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning a `UserError`, or a write the disk or permissions refused, into one
    line on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        print(f"error: {err.filename or 'a file'}: {err.strerror}", file=sys.stderr)
        sys.exit(2)

"""The one exception type users see.

A `RobustgenError` carries a single line that names the problem and the fix.
The CLI prints it without a traceback and exits non-zero; Python callers can
catch it. Anything else escaping the library is a bug.
"""


class RobustgenError(Exception):
    """A user-facing error: one line, saying what is wrong and what to do."""

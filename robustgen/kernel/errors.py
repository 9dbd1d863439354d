"""The one exception type users see.

A `RobustgenError` carries a single line that names the problem and the fix.
The CLI prints it without a traceback and exits non-zero; Python callers can
catch it. Anything else escaping the library is a bug.
"""


class RobustgenError(Exception):
    """A user-facing error: one line, saying what is wrong and what to do.

    Line breaks in the message (e.g. from a quoted library error) are folded
    into spaces, so the CLI's promise of exactly one line holds.
    """

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split("\n")).strip())

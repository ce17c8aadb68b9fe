"""User-facing error type.

Anything the user can get wrong (a spec key, a value, a file) raises `UserError`
with one line that names the culprit and the fix. The CLI prints that line and
exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in user input: one line, naming the culprit and the fix."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

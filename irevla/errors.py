"""The one base of every error a user can fix: a bad config, a missing or corrupt file, a wrong token, a bad variation.

Every such error derives from `UserError`; ``irevla`` catches it once and prints one line on stderr (the message names
the file, field and expected value) and exits 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message names the file / field / value and what was expected."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named (--policy, --head, --init, a dataset directory) is not there.

    Also a `FileNotFoundError`, so callers that catch that keep working; the message names the path.
    """


def one_line(error: BaseException) -> str:
    """The error's message on one line: a multi-line message (e.g. one line per bad config key) joined with '; '."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__

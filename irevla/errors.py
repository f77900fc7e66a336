"""The one base of every error a user can fix: a bad config, a missing or corrupt file, a wrong token, a bad variation.

Every such error derives from `UserError`; ``irevla`` catches it once and prints one line on stderr (the message names
the file, field and expected value) and exits 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message names the file / field / value and what was expected."""

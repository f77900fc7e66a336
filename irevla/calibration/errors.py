"""Errors and warnings raised by the calibration package.

Every message names what is wrong and where (the file, the sample, the key) so that a user at the robot can fix it
without reading code. The CLI turns a `CalibrationError` into a one-line message and a non-zero exit status.
"""

from __future__ import annotations

from irevla.errors import UserError


class CalibrationError(UserError, ValueError):
    """Calibration input is unusable (too few samples, corrupt file, degenerate motion...). Nothing was written."""


class CalibrationWarning(UserWarning):
    """Calibration can go on, but the result may be worse than it should be (a skipped sample, weak motion...)."""

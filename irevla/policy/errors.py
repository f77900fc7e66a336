"""Errors of the policy package that a user can fix. Light on purpose: the CLI imports this without torch."""

from __future__ import annotations

from irevla.errors import UserError


class CheckpointError(UserError, ValueError):
    """A policy checkpoint (or a head / trainer-state file) is missing a part, corrupt, or does not match.

    The message names the file, the field and what was expected, e.g.
    ``runs/sft/policy/head.safetensors: tensor 'mlp.out.weight': expected shape (4, 256), got (7, 256)``.
    """

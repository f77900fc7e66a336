"""The metrics of every long stage: ``metrics.jsonl``, TensorBoard events and, when enabled, a wandb run.

`MetricsLog(directory, ...)` is what SFT (stage 0 and 2), the stage-1 actor (the loop), the stage-1 learner process
and the loop's evaluations write through. For a stage directory ``<dir>``::

    <dir>/metrics.jsonl    one JSON object per record: {"step": ..., "<name>": value, ...} (the source of truth)
    <dir>/tensorboard/     the numeric values of each record as TensorBoard scalars (TensorBoard's own writer)
    <dir>/wandb/           wandb's local files, when ``wandb.enabled`` (off by default; ``pip install wandb``)
    <dir>/wandb.id         the wandb run id of this directory: a resumed stage continues the same wandb run

Resuming (``resume_step``): records with a step past ``resume_step`` (written after the last checkpoint of the
interrupted run) are dropped from metrics.jsonl, and TensorBoard discards its events past it too (a purge step),
so each step appears once. A fresh start (``resume_step=None``) replaces what an earlier attempt left.

It imports no framework: TensorBoard's own record writer and protos need neither torch nor TensorFlow (so the JAX
learner process stays torch-free), and wandb is imported only when enabled. Events are written synchronously (`EventFile`): a stage killed with SIGKILL loses no point that
metrics.jsonl has. It sits low in the layers so that both the torch side and the learner process can use it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from irevla.config import ConfigModel
from irevla.errors import UserError

JSONL = "metrics.jsonl"
TENSORBOARD = "tensorboard"
WANDB_ID = "wandb.id"
_TAG = re.compile(r"[^-/\w.]")


class MetricsLogError(UserError, RuntimeError):
    """Logging was asked for and cannot work (wandb not installed, wandb.init failed); the message says what to do."""


class WandbConfig(ConfigModel):
    """Weights & Biases, optional and off by default: one wandb run per stage directory, grouped by the run."""

    enabled: bool = Field(default=False, description="also log every stage's metrics to wandb (pip install wandb, "
                                                     "or the irevla[wandb] extra)")
    project: str = "irevla"
    entity: str | None = Field(default=None, description="wandb team or user (default: wandb's default entity)")
    mode: Literal["online", "offline"] | None = Field(default=None, description=(
        "online, or offline (files only; upload later with `wandb sync`); default: $WANDB_MODE, else online"))
    tags: tuple[str, ...] = ()
    name: str | None = Field(default=None, description="the wandb run's name (default: from the run directory "
                                                      "and the stage, e.g. demo/rl-1)")
    group: str | None = Field(default=None, description="wandb group (the loop: the run directory's name)")
    dir: str | None = Field(default=None, description="where wandb keeps its local files (default: $WANDB_DIR, "
                                                     "else the stage directory)")


class LoggingConfig(ConfigModel):
    """Where the stages' metrics go besides metrics.jsonl (which is always written)."""

    tensorboard: bool = Field(default=True, description="TensorBoard events in each stage's tensorboard/ "
                                                        "(tensorboard --logdir <run_dir>)")
    wandb: WandbConfig = WandbConfig()


def tag_of(key: str) -> str:
    """A record key as a TensorBoard tag (letters, digits, ``_ - . /``; other characters become ``_``)."""
    return _TAG.sub("_", key)


def check_wandb(config: WandbConfig | None) -> None:
    """Raise `MetricsLogError` now if wandb is enabled but not installed (before a long run starts)."""
    if config is not None and config.enabled:
        _import_wandb()


def _import_wandb():
    try:
        import wandb
    except ImportError as exc:
        raise MetricsLogError(f"wandb.enabled is true but wandb cannot be imported ({exc}): pip install wandb (or "
                              f"the irevla[wandb] extra), or set wandb.enabled: false") from None
    return wandb


class EventFile:
    """One TensorBoard event file, written synchronously with TensorBoard's own record writer and protos (they load
    neither torch nor TensorFlow): each record is in the file when `add` returns, so a killed stage keeps its points
    (torch's and tensorboardX's SummaryWriter queue events for a thread)."""

    def __init__(self, directory: Path, purge_step: int | None = None) -> None:
        import socket

        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = Event, Summary
        directory.mkdir(parents=True, exist_ok=True)
        # TensorBoard's naming (events.out.tfevents.<seconds>.<host>) plus nanoseconds: two files started in the same
        # second stay apart, and in order.
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{time.time_ns()}"
        self._writer = RecordWriter(open(directory / name, "wb"))  # noqa: SIM115 - closed in close()
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:  # TensorBoard hides what earlier files hold at or past this step
            self._write(Event(step=purge_step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))

    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def add(self, scalars: Mapping[str, float], step: int) -> None:
        values = [self._summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        self._write(self._event(step=step, wall_time=time.time(), summary=self._summary(value=values)))

    def close(self) -> None:
        self._writer.close()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        import numpy as np

        if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
            return float(value)
    except ImportError:  # pragma: no cover - numpy is a base requirement
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _truncate(path: Path, resume_step: int) -> None:
    """Keep the lines of `path` whose step is at most `resume_step` (a line cut short by a crash is dropped)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= resume_step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in kept))


class MetricsLog:
    """One stage directory's metrics (see the module docstring).

    `resume_step`: None for a fresh start; else the step the stage resumes from (its last checkpoint): records past
    it are dropped. `run_name`: the wandb run's name unless the config names it; `job_type` and `config` go to wandb.
    """

    def __init__(self, directory: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 wandb: WandbConfig | None = None, run_name: str | None = None, job_type: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / JSONL
        resuming = resume_step is not None
        if resuming and self.path.exists():
            _truncate(self.path, resume_step)
        elif not resuming and self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            board = self.directory / TENSORBOARD
            if not resuming and board.is_dir():  # a fresh start replaces an earlier attempt's events
                for old in board.glob("events.out.tfevents.*"):
                    old.unlink()
            self.writer = EventFile(board, purge_step=resume_step + 1 if resuming else None)
        self.wandb_run = None
        if wandb is not None and wandb.enabled:
            self.wandb_run = self._start_wandb(wandb, resuming, run_name, job_type, config)

    def _start_wandb(self, settings: WandbConfig, resuming: bool, run_name: str | None, job_type: str | None,
                     config: Mapping[str, Any] | None):
        wandb = _import_wandb()
        id_file = self.directory / WANDB_ID
        if resuming and id_file.is_file() and id_file.read_text().strip():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(6)
            id_file.write_text(run_id + "\n")
        directory = settings.dir or os.environ.get("WANDB_DIR") or str(self.directory)
        Path(directory).mkdir(parents=True, exist_ok=True)
        try:
            return wandb.init(project=settings.project, entity=settings.entity, mode=settings.mode,
                              name=settings.name or run_name or self.directory.name, group=settings.group,
                              tags=list(settings.tags) or None, job_type=job_type, dir=directory, id=run_id,
                              resume="allow", config=dict(config) if config is not None else None)
        except Exception as exc:  # noqa: BLE001 -- wandb raises many kinds (login, network, usage)
            raise MetricsLogError(f"{self.directory}: wandb.init failed: {exc} (run `wandb login`, or set "
                                  f"wandb.mode: offline, or wandb.enabled: false)") from None

    def write(self, record: Mapping[str, Any]) -> None:
        """Append `record` (it must have an integer ``step``) to metrics.jsonl; its numbers go to TensorBoard and
        wandb under `tag_of` their keys."""
        step = int(record["step"])
        with open(self.path, "a") as handle:
            handle.write(json.dumps(dict(record)) + "\n")
        scalars = {tag_of(key): number for key, value in record.items()
                   if key != "step" and (number := _number(value)) is not None}
        if self.writer is not None and scalars:
            self.writer.add(scalars, step)
        if self.wandb_run is not None and scalars:
            self.wandb_run.log({tag: value for tag, value in scalars.items() if math.isfinite(value)}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

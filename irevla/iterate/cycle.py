"""The unattended episode cycle of stage 1 on the robot: reset, reset hook, time limit, pauses (ROS-free).

A night on the robot is episode after episode with nobody watching. Between two episodes the cycle

1. runs the user's **reset hook** (`ResetHook`, ``cycle.reset_hook``), if any: a shell command (its own process
   group, killed as a whole after ``reset_hook_timeout_s``) or a Python entry point ``package.module:function``
   (called in a worker thread with keyword arguments ``episode``, ``attempt``, ``stage_dir``; a Python call cannot be
   killed, so one that hangs past its timeout counts as failed and no new call starts while it still runs);
2. resets the env (on the robot, `RobotEnv.reset` homes the arm through franka_control's reset service and waits for
   a fresh observation), so the episode's first observation shows the scene the hook left;
3. runs the episode, truncating it after ``episode_time_limit_s`` seconds (`EpisodeTimer`) besides the env's step
   limit.

A **fault** -- a camera dropout or any missing observation, a reset the controller refused or did not answer, a
failed or hung reset hook -- does not end the night: the cycle **pauses**. It writes ``run_dir/rl-K/pause.json``
(the reason, since when, what to do), appends a ``pause`` event to ``run_dir/events.jsonl``, logs one clear line,
and retries every ``retry_every_s``. The next good episode ends the pause (a ``resume`` event with its duration;
``pause.json`` is removed). After ``max_wait_s`` of pausing, or ``max_resets_failed_in_a_row`` failed attempts in a
row, it stops with `CycleStopped`, a `UserError` naming the reason: the stage ends (the loop closes the learner,
which snapshots), and rerunning the same ``irevla iterate`` command resumes from ``rl-K/actor.json``. Nothing
collected is lost: episodes are written atomically and counted only once finished; a faulted episode is dropped
whole and run again under the same index.

Which errors are faults: those carrying a ``fault_kind`` attribute (the cycle's own, e.g. `ResetHookError`), and
the robot env's `RobotEnvError`, recognised by its class name (`RECOVERABLE_ERRORS`) so that this module never
imports `irevla.robot` (only `irevla.iterate.envs` may). Anything else is a bug and propagates at once.

`events.jsonl` (one JSON object per line: ``event``, ``time`` (ISO), ``t`` (Unix seconds), ``stage`` ...) is what
the morning report (`irevla.iterate.morning`) reads: ``episode`` (one per finished attempt: episode, started,
ended, seconds, attempts), ``reset_failed`` / ``episode_failed`` (a fault; ``kind``, ``message``), ``pause``,
``resume`` (``paused_s``), ``stop``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, model_validator

from irevla.atomic_io import atomic_write_text
from irevla.config import ConfigError, ConfigModel
from irevla.errors import UserError, one_line

Log = Callable[[str], None]
T = TypeVar("T")

EVENTS_FILE = "events.jsonl"
PAUSE_FILE = "pause.json"
HOOK_LOG = "reset_hook.log"
# Exception classes that are robot-side faults, by name: irevla.robot.env.RobotEnvError ("no fresh observation ...",
# "reset failed: ...", the reset service not answering). The iterate layer reaches irevla.robot only through its env
# factory, so the class is recognised here by name rather than imported.
RECOVERABLE_ERRORS = frozenset({"RobotEnvError"})
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_STDERR_LINES = 12

FaultKind = Literal["observation", "controller", "robot", "reset_hook", "hook_timeout"]
WHAT_TO_DO: dict[str, str] = {
    "observation": "a camera or the robot state stopped publishing: check the cameras' cables and power and that the "
                   "camera and franka_control nodes run (ros2 topic hz on the image and robot-state topics)",
    "controller": "franka_control could not home the arm (a controller fault or reflex, or franka_control is not "
                  "answering): look at the arm (lights, the external activation device), clear the fault (the "
                  "recover service, or Desk) and make sure franka_control runs",
    "robot": "the robot side did not answer: check franka_control, the cameras and their topics",
    "reset_hook": "the reset hook failed: read its message and its output (rl-K/reset_hook.log), fix the scene or "
                  "the hook",
    "hook_timeout": "the reset hook did not finish within reset_hook_timeout_s: see what it waits for "
                    "(rl-K/reset_hook.log), fix it or raise the timeout",
}


class CycleConfig(ConfigModel):
    """The unattended episode cycle of stage 1 (docs/overnight.md, "An unattended night"): reset hook, time limit,
    and how long a fault may pause the run before it stops."""

    reset_hook: str | None = Field(default=None, description=(
        "run before every episode's reset (the arm then homes and the episode starts from what the hook left): a "
        "shell command (environment: IREVLA_EPISODE, IREVLA_ATTEMPT, IREVLA_STAGE_DIR; exit status 0 = done) or a "
        "Python entry point package.module:function (called with episode=, attempt=, stage_dir=; returning "
        "False or raising = failed)"))
    reset_hook_timeout_s: float = Field(default=120.0, gt=0, description=(
        "a shell hook still running after this is killed with its whole process group; a Python hook cannot be "
        "killed: it counts as failed, and no new call starts while it runs"))
    episode_time_limit_s: float | None = Field(default=None, gt=0, description=(
        "end (truncate) an episode after this many seconds, besides its step limit (default: steps only)"))
    retry_every_s: float = Field(default=30.0, gt=0, description="while paused by a fault: retry this often")
    max_wait_s: float = Field(default=3600.0, ge=0, description=(
        "stop the run (rerun the command to resume) when a pause has lasted this long"))
    max_resets_failed_in_a_row: int = Field(default=20, ge=1, description=(
        "stop the run after this many failed attempts in a row, however short the pause"))

    @model_validator(mode="after")
    def _hook_not_blank(self) -> CycleConfig:
        if self.reset_hook is not None and not self.reset_hook.strip():
            raise ValueError("reset_hook: empty; leave it out (null) for no hook")
        return self


# ----------------------------------------------------------------------------------------------------- faults
class CycleStopped(UserError, RuntimeError):
    """A fault paused the run longer than the cycle may wait; the message names the reason and what to do."""


class ResetHookError(UserError, RuntimeError):
    """The reset hook failed, timed out or is still running; a fault (the cycle pauses)."""

    def __init__(self, result: HookResult) -> None:
        super().__init__(result.message)
        self.result = result
        self.fault_kind = "hook_timeout" if result.status == "timed_out" else "reset_hook"


@dataclass(frozen=True)
class Fault:
    kind: str
    message: str
    phase: Literal["reset", "episode"]

    @property
    def what_to_do(self) -> str:
        return WHAT_TO_DO.get(self.kind, WHAT_TO_DO["robot"])


def fault_kind(error: BaseException) -> str | None:
    """The kind of fault `error` is, or None when it is not one (a bug: let it propagate).

    An error may say so itself (a ``fault_kind`` attribute); the robot env's `RobotEnvError` is recognised by its
    class name and sorted by its message: no fresh observation = ``observation`` (a camera dropout, or the robot
    state missing), anything about the reset = ``controller``, else ``robot``.
    """
    kind = getattr(error, "fault_kind", None)
    if isinstance(kind, str) and kind:
        return kind
    if not any(cls.__name__ in RECOVERABLE_ERRORS for cls in type(error).__mro__):
        return None
    message = str(error).lower()
    if "no fresh observation" in message or "observation" in message:
        return "observation"
    if "reset" in message:
        return "controller"
    return "robot"


# -------------------------------------------------------------------------------------------------- reset hook
@dataclass(frozen=True)
class HookResult:
    status: Literal["ok", "failed", "timed_out", "busy"]
    hook: str
    seconds: float = 0.0
    exit_code: int | None = None
    stderr_tail: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def message(self) -> str:
        """One clear sentence: which hook, what happened, its last stderr lines."""
        if self.status == "ok":
            return f"reset hook {self.hook!r} finished in {self.seconds:.1f} s" + (f" ({self.detail})"
                                                                                    if self.detail else "")
        if self.status == "timed_out":
            text = f"reset hook {self.hook!r} did not finish within {self.seconds:g} s"
        elif self.status == "busy":
            text = f"reset hook {self.hook!r}: not started"
        elif self.exit_code is not None:
            text = f"reset hook {self.hook!r} failed (exit status {self.exit_code})"
        else:
            text = f"reset hook {self.hook!r} failed"
        if self.detail:
            text += f": {self.detail}"
        if self.stderr_tail:
            text += f"; its stderr ends: {' | '.join(self.stderr_tail.splitlines())}"
        return text


def _tail(text: str, lines: int = _STDERR_LINES) -> str:
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def load_entry_point(spec: str) -> Callable[..., Any]:
    """``package.module:function`` -> the function (ConfigError naming what is missing)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cycle.reset_hook: {spec!r}: cannot import {module_name!r} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"cycle.reset_hook: {spec!r}: {module_name} has no function {attribute!r}")
    return function


class ResetHook:
    """The user's reset hook: a shell command or a Python entry point (``package.module:function``), with a timeout.

    `run(episode=..., attempt=..., stage_dir=...)` returns a `HookResult` (it never raises for the hook's failures).
    A shell command runs in its own session (process group); after the timeout the whole group gets SIGTERM, then
    SIGKILL 5 s later, and any process it leaves behind after exiting gets SIGTERM too. Its stdout and stderr are
    appended to `log_file` when given. A Python hook runs in a daemon thread: past its timeout it is reported as
    timed out but keeps running (Python cannot kill a thread), and `run` refuses ("busy") until it has returned.
    """

    KILL_GRACE_S = 5.0

    def __init__(self, spec: str, timeout_s: float, log_file: Path | None = None) -> None:
        self.spec = spec.strip()
        self.timeout_s = timeout_s
        self.log_file = log_file
        self.is_python = bool(_ENTRY_POINT.match(self.spec))
        self._function = load_entry_point(self.spec) if self.is_python else None
        self._thread: threading.Thread | None = None
        self._thread_started = 0.0

    def run(self, **context: Any) -> HookResult:
        return self._run_python(context) if self.is_python else self._run_shell(context)

    @property
    def still_running(self) -> bool:
        """A Python hook that timed out is still running (a shell hook never is: it was killed)."""
        return self._thread is not None and self._thread.is_alive()

    # -------------------------------------------------------------------------------------------- shell
    def _run_shell(self, context: dict[str, Any]) -> HookResult:
        env = {**os.environ, **{f"IREVLA_{key.upper()}": str(value) for key, value in context.items()}}
        started = time.monotonic()
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(self.spec, shell=True, env=env, stdin=subprocess.DEVNULL,  # noqa: S602
                                       stdout=stdout, stderr=stderr, start_new_session=True)
            timed_out = False
            try:
                process.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(self.KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    self._signal_group(process.pid, signal.SIGKILL)
                    process.wait()
            leftovers = self._signal_group(process.pid, signal.SIGKILL if timed_out else signal.SIGTERM)
            seconds = time.monotonic() - started
            out, err = (self._read(stream) for stream in (stdout, stderr))
        self._append_log(context, out, err)
        if timed_out:
            return HookResult("timed_out", self.spec, self.timeout_s, stderr_tail=_tail(err),
                              detail="killed with its process group")
        note = "it left processes behind, which were stopped" if leftovers else ""
        if process.returncode != 0:
            return HookResult("failed", self.spec, seconds, exit_code=process.returncode, stderr_tail=_tail(err),
                              detail=note)
        return HookResult("ok", self.spec, seconds, exit_code=0, detail=note)

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> bool:
        """Signal the process group `pgid`; False when it is empty (nothing left to signal)."""
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @staticmethod
    def _read(stream) -> str:
        stream.seek(0)
        return stream.read().decode("utf-8", errors="replace")

    def _append_log(self, context: dict[str, Any], out: str, err: str) -> None:
        if self.log_file is None:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {self.spec} "
                      f"{' '.join(f'{k}={v}' for k, v in context.items())}\n{out}")
            if err:
                log.write(f"[stderr]\n{err}")

    # ------------------------------------------------------------------------------------------- python
    def _run_python(self, context: dict[str, Any]) -> HookResult:
        if self.still_running:
            return HookResult("busy", self.spec, detail=(
                f"its previous call (started {time.monotonic() - self._thread_started:.0f} s ago) is still running; "
                f"a Python hook cannot be killed: fix it, or make it a shell command, which is killed after its "
                f"timeout"))
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = self._function(**context)  # type: ignore[misc]
            except BaseException as exc:  # noqa: BLE001 -- the hook's failure is reported, not raised here
                outcome["error"] = exc
                outcome["traceback"] = traceback.format_exc()

        started = time.monotonic()
        self._thread = threading.Thread(target=call, name=f"reset-hook {self.spec}", daemon=True)
        self._thread_started = started
        self._thread.start()
        self._thread.join(self.timeout_s)
        seconds = time.monotonic() - started
        if self._thread.is_alive():
            return HookResult("timed_out", self.spec, self.timeout_s, detail=(
                "a Python hook cannot be killed: it keeps running, and no new call starts until it returns"))
        self._thread = None
        if "error" in outcome:
            return HookResult("failed", self.spec, seconds, detail=one_line(outcome["error"]),
                              stderr_tail=_tail(outcome["traceback"], 4))
        if outcome.get("value") is False:
            return HookResult("failed", self.spec, seconds, detail="it returned False")
        return HookResult("ok", self.spec, seconds)


# ------------------------------------------------------------------------------------------------ time limit
class EpisodeTimer:
    """An episode's wall-clock limit: `start()` at the reset, `expired` once `limit_s` has passed (never without a
    limit)."""

    def __init__(self, limit_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self._clock()

    @property
    def elapsed(self) -> float:
        return 0.0 if self._started is None else self._clock() - self._started

    @property
    def expired(self) -> bool:
        return self.limit_s is not None and self._started is not None and self.elapsed >= self.limit_s


# ----------------------------------------------------------------------------------------------- events log
class EventLog:
    """``run_dir/events.jsonl``: one JSON line per event, appended and fsynced (a line torn by a crash is skipped
    by `read_events`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        now = time.time()
        record = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
                  "t": round(now, 3), **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of `path` (none if it is missing); a torn or foreign line is skipped."""
    events = []
    if not Path(path).is_file():
        return events
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
    return events


# ----------------------------------------------------------------------------------------------------- cycle
@dataclass
class _Pause:
    kind: str
    message: str
    since: float  # Unix time
    since_monotonic: float
    episode: int
    failures: int = 1
    history: list[str] = field(default_factory=list)


class EpisodeCycle:
    """One stage's unattended episodes: `run_episode` around each attempt, `CycleEnv` around the env.

    `stage_dir` is ``run_dir/rl-K`` (pause.json and the hook's log go there); events go to ``run_dir/events.jsonl``.
    `clock`/`sleep` are for the waits between retries.
    """

    def __init__(self, config: CycleConfig, stage_dir: Path, log: Log = print, *,
                 events: EventLog | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.stage_dir = Path(stage_dir)
        self.stage = self.stage_dir.name
        self.log = log
        self.events = events or EventLog(self.stage_dir.parent / EVENTS_FILE)
        self.sleep = sleep
        self.hook = (ResetHook(config.reset_hook, config.reset_hook_timeout_s, self.stage_dir / HOOK_LOG)
                     if config.reset_hook else None)
        self.timer = EpisodeTimer(config.episode_time_limit_s)
        self.pause_file = self.stage_dir / PAUSE_FILE
        self.episode = 0
        self.attempt = 0
        self.phase: Literal["reset", "episode"] = "reset"
        self._pause: _Pause | None = None
        self._failed_in_a_row = 0
        self._resume_after_restart()

    # ------------------------------------------------------------------------------------------ episodes
    def run_episode(self, episode: int, attempt: Callable[[], T],
                    on_fault: Callable[[Fault], None] | None = None, series: str | None = None) -> T:
        """Run `attempt()` (one whole episode, reset included, e.g. `run_rl_episode` on a `CycleEnv`) until it
        finishes without a fault, pausing between tries; return its result.

        On a fault the attempt's partial episode is dropped (build the episode's recorder inside `attempt`), then
        `on_fault(fault)` is called (e.g. to drop a learner link's half-sent steps when ``fault.phase`` is
        ``episode``), the cycle pauses and retries. Raises `CycleStopped` when the pause lasts too long, and any
        error that is not a fault at once. `series` labels episodes numbered apart from the stage's own (e.g.
        ``final`` for the final rollouts) in their ``episode`` event.
        """
        self.episode, self.attempt = episode, 0
        while True:
            self.attempt += 1
            self.phase = "reset"
            started = time.time()
            try:
                result = attempt()
            except Exception as exc:  # noqa: BLE001 -- sorted into faults and bugs right here
                kind = fault_kind(exc)
                if kind is None:
                    raise
                fault = Fault(kind, one_line(exc), self.phase)
                self._on_fault(fault)
                if on_fault is not None:
                    on_fault(fault)
                self._wait_or_stop()
                continue
            ended = time.time()
            self._failed_in_a_row = 0
            if self._pause is not None:
                self._end_pause()
            self.events.write("episode", stage=self.stage, episode=episode, started=round(started, 3),
                              ended=round(ended, 3), seconds=round(ended - started, 2), attempts=self.attempt,
                              **({"series": series} if series else {}))
            return result

    def reset(self, env, **kwargs: Any):
        """The reset of one episode: the hook (a failure raises `ResetHookError`, a fault), then ``env.reset``.
        The time limit starts when the first observation is there."""
        self.phase = "reset"
        if self.hook is not None:
            result = self.hook.run(episode=self.episode, attempt=self.attempt, stage_dir=str(self.stage_dir))
            if not result.ok:
                raise ResetHookError(result)
        observation, info = env.reset(**kwargs)
        self.timer.start()
        self.phase = "episode"
        return observation, info

    # ------------------------------------------------------------------------------------------- pauses
    def _on_fault(self, fault: Fault) -> None:
        self._failed_in_a_row += 1
        self.events.write("reset_failed" if fault.phase == "reset" else "episode_failed", stage=self.stage,
                          episode=self.episode, attempt=self.attempt, kind=fault.kind, message=fault.message)
        if self._pause is None:
            now = time.time()
            self._pause = _Pause(fault.kind, fault.message, now, time.monotonic(), self.episode)
            self._write_pause_file(fault, stopped=False)
            self.events.write("pause", stage=self.stage, episode=self.episode, kind=fault.kind,
                              message=fault.message, what_to_do=fault.what_to_do)
            self.log(f"{self.stage}: PAUSED at episode {self.episode} ({fault.kind}, during the {fault.phase}): "
                     f"{fault.message}. What to do: {fault.what_to_do}. Retrying every "
                     f"{self.config.retry_every_s:g} s for up to {self.config.max_wait_s:g} s ({self.pause_file})")
        else:
            self._pause.failures += 1
            self._pause.kind, self._pause.message = fault.kind, fault.message
            self._write_pause_file(fault, stopped=False)
            self.log(f"{self.stage}: still paused ({self._pause.failures} failed attempts, "
                     f"{time.monotonic() - self._pause.since_monotonic:.0f} s): {fault.message}")

    def _wait_or_stop(self) -> None:
        pause = self._pause
        assert pause is not None
        waited = time.monotonic() - pause.since_monotonic
        too_long = waited + self.config.retry_every_s > self.config.max_wait_s
        too_many = self._failed_in_a_row >= self.config.max_resets_failed_in_a_row
        if not (too_long or too_many):
            self.sleep(self.config.retry_every_s)
            return
        why = (f"{self._failed_in_a_row} attempts failed in a row" if too_many
               else f"paused for {waited:.0f} s (max_wait_s {self.config.max_wait_s:g})")
        fault = Fault(pause.kind, pause.message, self.phase)
        self._write_pause_file(fault, stopped=True, why=why)
        self.events.write("stop", stage=self.stage, episode=self.episode, kind=pause.kind, message=pause.message,
                          why=why, paused_s=round(waited, 1))
        raise CycleStopped(f"{self.stage}: stopped at episode {self.episode}, {why}: {pause.kind}: {pause.message}. "
                           f"What to do: {fault.what_to_do}; then run the same irevla iterate command again: it "
                           f"resumes at episode {self.episode}, keeping every episode collected so far "
                           f"({self.pause_file})")

    def _end_pause(self) -> None:
        pause = self._pause
        assert pause is not None
        paused = time.monotonic() - pause.since_monotonic
        self.events.write("resume", stage=self.stage, episode=self.episode, kind=pause.kind,
                          paused_s=round(paused, 1), failures=pause.failures)
        self.log(f"{self.stage}: resumed after a pause of {paused:.0f} s ({pause.kind}: {pause.message})")
        self.pause_file.unlink(missing_ok=True)
        self._pause = None

    def _write_pause_file(self, fault: Fault, stopped: bool, why: str = "") -> None:
        pause = self._pause
        assert pause is not None
        record = {"stage": self.stage, "episode": pause.episode, "kind": fault.kind, "phase": fault.phase,
                  "reason": fault.message, "since": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(pause.since)),
                  "since_t": round(pause.since, 3), "failed_attempts": pause.failures,
                  "what_to_do": fault.what_to_do, "stopped": stopped,
                  "retry": ("rerun the same irevla iterate command: it resumes from this stage's actor.json"
                            if stopped else f"the cycle retries every {self.config.retry_every_s:g} s")}
        if why:
            record["why_stopped"] = why
        atomic_write_text(self.pause_file, json.dumps(record, indent=1))

    def _resume_after_restart(self) -> None:
        """A pause.json left by a run that stopped (or was killed) while paused: this run resumes it."""
        if not self.pause_file.is_file():
            return
        try:
            record = json.loads(self.pause_file.read_text())
        except json.JSONDecodeError:
            record = {}
        since = float(record.get("since_t", time.time()))
        paused = max(0.0, time.time() - since)
        self.events.write("resume", stage=self.stage, episode=record.get("episode"), kind=record.get("kind"),
                          paused_s=round(paused, 1), restarted=True)
        self.log(f"{self.stage}: resuming after a pause of {paused:.0f} s ({record.get('kind', '?')}: "
                 f"{record.get('reason', '?')})")
        self.pause_file.unlink(missing_ok=True)


class CycleEnv:
    """A contract env whose reset is the cycle's (hook, then the env's reset) and whose step also truncates at the
    cycle's episode time limit (``info["time_limit"]``). Everything else passes through."""

    def __init__(self, env, cycle: EpisodeCycle) -> None:
        self.env = env
        self.cycle = cycle

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def reset(self, **kwargs: Any):
        return self.cycle.reset(self.env, **kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not terminated and not truncated and self.cycle.timer.expired:
            truncated = True
            info = {**info, "time_limit": True}
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()


def recorded_episode(store, stage: str, episode: int):
    """The `EpisodeInfo` of an episode of `stage` with index `episode` already in `store` (written, but the process
    died before counting it in its progress file), or None. A resumed stage adopts it instead of running the episode
    again, so a kill between the two atomic writes neither loses nor duplicates it."""
    for info in store.index():
        if info.metadata.get("stage") == stage and info.metadata.get("episode") == episode:
            return info
    return None

"""The unattended episode cycle (irevla.iterate.cycle): reset hooks for real (shell commands in their own process
group, Python entry points in a thread), faults of the robot's kind on a real simulated env (a camera stand-in that
drops out), pauses, stops and resumes, the time limit, and a kill -9 between writing an episode and counting it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("metaworld")

import cycle_helpers  # noqa: E402
from cycle_helpers import STAGE, run_episodes  # noqa: E402

from irevla.config import ConfigError, validate_config  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.errors import UserError  # noqa: E402
from irevla.iterate.cycle import (  # noqa: E402
    CycleConfig,
    CycleStopped,
    EpisodeTimer,
    ResetHook,
    fault_kind,
    read_events,
)
from irevla.robot.env import RobotEnvError  # noqa: E402

HERE = Path(__file__).resolve().parent
QUICK = {"retry_every_s": 0.05, "max_wait_s": 30.0}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


def _events(run_dir: Path, kind: str | None = None) -> list[dict]:
    events = read_events(run_dir / "events.jsonl")
    return [e for e in events if kind is None or e["event"] == kind]


def _indices(run_dir: Path) -> list[int]:
    return sorted(info.metadata["episode"] for info in EpisodeStore(run_dir / "d_rl").index())


# ------------------------------------------------------------------------------------------------ reset hooks
def test_a_failing_shell_hook_says_why(tmp_path):
    hook = ResetHook("echo moving the cube; echo 'gripper camera: cube not found' >&2; exit 3", 10,
                     log_file=tmp_path / "hook.log")
    result = hook.run(episode=4, attempt=1, stage_dir=str(tmp_path))
    assert result.status == "failed" and result.exit_code == 3
    assert "exit status 3" in result.message and "cube not found" in result.message
    assert "moving the cube" in (tmp_path / "hook.log").read_text()
    ok = ResetHook('test "$IREVLA_EPISODE" = 4 && test "$IREVLA_STAGE_DIR" = "' + str(tmp_path) + '"', 10)
    assert ok.run(episode=4, attempt=1, stage_dir=str(tmp_path)).ok


def test_a_hanging_shell_hook_is_killed_with_its_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    hook = ResetHook(f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; echo waiting >&2; wait", timeout_s=0.5)
    started = time.monotonic()
    result = hook.run(episode=0, attempt=1, stage_dir=str(tmp_path))
    assert result.status == "timed_out" and time.monotonic() - started < 8
    assert "did not finish within 0 s" not in result.message and "killed with its process group" in result.message
    assert "waiting" in result.stderr_tail
    processes = [int(line) for line in pids.read_text().split()]
    assert len(processes) == 2 and _wait_dead(processes) == []  # the shell and its background child: none left


def test_a_hook_that_exits_but_leaves_a_process_behind_is_cleaned_up(tmp_path):
    pid_file = tmp_path / "pid"
    result = ResetHook(f"sleep 300 & echo $! > {pid_file}", 10).run(episode=0, attempt=1, stage_dir="")
    assert result.ok and "left processes behind" in result.message
    assert _wait_dead([int(pid_file.read_text())]) == []


def test_python_hooks_ok_failing_and_hanging(tmp_path):
    cycle_helpers.CALLS.clear()
    cycle_helpers.RELEASE.clear()
    assert ResetHook("cycle_helpers:record_hook", 5).run(episode=7, attempt=2, stage_dir="x").ok
    assert cycle_helpers.CALLS == [{"episode": 7, "attempt": 2, "stage_dir": "x"}]
    failed = ResetHook("cycle_helpers:failing_hook", 5).run(episode=3, attempt=1, stage_dir="x")
    assert failed.status == "failed" and "the cube is not in the bin (episode 3)" in failed.message
    refused = ResetHook("cycle_helpers:refusing_hook", 5).run(episode=3, attempt=1, stage_dir="x")
    assert refused.status == "failed" and "returned False" in refused.message

    hanging = ResetHook("cycle_helpers:hanging_hook", 0.3)
    result = hanging.run(episode=1, attempt=1, stage_dir="x")
    assert result.status == "timed_out" and "cannot be killed" in result.message and hanging.still_running
    busy = hanging.run(episode=1, attempt=2, stage_dir="x")  # refuses to start a second call beside the first
    assert busy.status == "busy" and "still running" in busy.message
    cycle_helpers.RELEASE.set()
    deadline = time.monotonic() + 5
    while hanging.still_running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not hanging.still_running and cycle_helpers.CALLS[-1]["released"]
    cycle_helpers.RELEASE.clear()
    assert hanging.run(episode=1, attempt=3, stage_dir="x").status == "timed_out"  # it may run again once free
    cycle_helpers.RELEASE.set()


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="reset_hook"):
        validate_config({"reset_hook": "  "}, CycleConfig, "rl.cycle")
    with pytest.raises(ConfigError, match="retry_every_s"):
        validate_config({"retry_every_s": 0}, CycleConfig, "rl.cycle")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_here'"):
        ResetHook("no_such_module_here:reset", 5)
    with pytest.raises(ConfigError, match="no function 'nothing'"):
        ResetHook("cycle_helpers:nothing", 5)


def test_faults_are_told_from_bugs():
    assert fault_kind(RobotEnvError("no fresh observation within 1.0 s from ['wrist']")) == "observation"
    assert fault_kind(RobotEnvError("reset failed: cannot home: fault: recover first")) == "controller"
    assert fault_kind(RobotEnvError("/irevla/control/reset_to_home did not answer within 30 s")) == "controller"
    assert fault_kind(ValueError("a bug")) is None and fault_kind(UserError("bad config")) is None


def test_the_time_limit():
    now = [0.0]
    timer = EpisodeTimer(2.0, clock=lambda: now[0])
    assert not timer.expired
    timer.start()
    now[0] = 1.9
    assert not timer.expired
    now[0] = 2.0
    assert timer.expired and timer.elapsed == 2.0
    assert not EpisodeTimer(None).expired


# ------------------------------------------------------------------------------------------------ the cycle
def test_a_camera_dropout_pauses_then_the_cycle_resumes_and_loses_nothing(tmp_path):
    config = CycleConfig(**QUICK)
    # The camera drops at the 2nd and 3rd resets (episode 1 twice), then in the middle of the 5th (episode 2).
    state = run_episodes(tmp_path, 5, config, failing_resets={2, 3}, failing_steps={(5, 3)}, log=lambda m: None)
    assert state["episodes"] == 5 and [h["episode"] for h in state["history"]] == [0, 1, 2, 3, 4]
    assert _indices(tmp_path) == [0, 1, 2, 3, 4]  # the half episode was dropped, episode 2 ran again whole
    assert all(h["steps"] == 8 for h in state["history"])
    pauses, resumes = _events(tmp_path, "pause"), _events(tmp_path, "resume")
    assert [(p["episode"], p["kind"]) for p in pauses] == [(1, "observation"), (2, "observation")]
    assert [r["failures"] for r in resumes] == [2, 1]
    assert [e["event"] for e in _events(tmp_path) if e["event"].endswith("_failed")] == [
        "reset_failed", "reset_failed", "episode_failed"]
    assert [e["attempts"] for e in _events(tmp_path, "episode")] == [1, 3, 2, 1, 1]
    assert not (tmp_path / STAGE / "pause.json").exists()


def test_a_failing_hook_stops_the_run_with_its_reason_and_a_rerun_resumes(tmp_path):
    messages: list[str] = []
    hook = "echo 'scene check: the cube is missing' >&2; exit 1"
    config = CycleConfig(reset_hook=hook, retry_every_s=0.05, max_wait_s=30, max_resets_failed_in_a_row=3)
    run_episodes(tmp_path, 2, CycleConfig(**QUICK), log=messages.append)  # two good episodes first
    with pytest.raises(CycleStopped) as stopped:
        run_episodes(tmp_path, 4, config, log=messages.append)
    text = str(stopped.value)
    assert "3 attempts failed in a row" in text and "the cube is missing" in text
    assert "run the same irevla iterate command again" in text and "resumes at episode 2" in text
    assert any("PAUSED at episode 2" in m and "reset_hook" in m for m in messages)
    pause = json.loads((tmp_path / STAGE / "pause.json").read_text())
    assert pause["stopped"] and pause["kind"] == "reset_hook" and pause["failed_attempts"] == 3
    assert "the cube is missing" in pause["reason"] and pause["what_to_do"]
    assert [e["why"] for e in _events(tmp_path, "stop")] == ["3 attempts failed in a row"]
    assert "the cube is missing" in (tmp_path / STAGE / "reset_hook.log").read_text()

    # The scene is fixed; the same command again: the pause ends, the stage goes on from episode 2.
    state = run_episodes(tmp_path, 4, CycleConfig(**QUICK), log=messages.append)
    assert state["episodes"] == 4 and _indices(tmp_path) == [0, 1, 2, 3]
    resume = _events(tmp_path, "resume")[-1]
    assert resume["restarted"] and resume["paused_s"] >= 0 and not (tmp_path / STAGE / "pause.json").exists()


def test_a_hanging_hook_is_killed_after_its_timeout_and_the_pause_says_so(tmp_path):
    pids = tmp_path / "pids"
    config = CycleConfig(reset_hook=f"echo $$ >> {pids}; sleep 300", reset_hook_timeout_s=0.5, retry_every_s=0.05,
                         max_wait_s=30, max_resets_failed_in_a_row=2)
    started = time.monotonic()
    with pytest.raises(CycleStopped, match="hook_timeout: reset hook .* did not finish within 0.5 s"):
        run_episodes(tmp_path, 1, config, log=lambda m: None)
    assert time.monotonic() - started < 20
    failures = _events(tmp_path, "reset_failed")
    assert [f["kind"] for f in failures] == ["hook_timeout", "hook_timeout"]
    assert json.loads((tmp_path / STAGE / "pause.json").read_text())["kind"] == "hook_timeout"
    assert _wait_dead([int(pid) for pid in pids.read_text().split()]) == []


def test_a_pause_gives_up_after_max_wait(tmp_path):
    config = CycleConfig(retry_every_s=0.2, max_wait_s=0.5)
    with pytest.raises(CycleStopped, match=r"paused for \d+ s \(max_wait_s 0.5\): observation"):
        run_episodes(tmp_path, 2, config, failing_resets=set(range(2, 100)), log=lambda m: None)
    assert len(_events(tmp_path, "reset_failed")) >= 2


def test_an_error_that_is_not_a_fault_is_not_retried(tmp_path):
    with pytest.raises(ValueError, match="no fresh observation"):
        run_episodes(tmp_path, 2, CycleConfig(**QUICK), failing_resets={2}, error=ValueError, log=lambda m: None)
    assert _events(tmp_path, "pause") == [] and not (tmp_path / STAGE / "pause.json").exists()
    assert _indices(tmp_path) == [0]


def test_the_episode_time_limit_truncates_a_slow_episode(tmp_path):
    config = CycleConfig(episode_time_limit_s=0.3, **QUICK)
    state = run_episodes(tmp_path, 2, config, step_delay_s=0.05, max_episode_steps=200, log=lambda m: None)
    assert all(3 <= h["steps"] <= 12 for h in state["history"]), state["history"]


# ------------------------------------------------------------------------------------------------ kill -9
def test_kill_between_writing_and_counting_an_episode_then_rerun(tmp_path):
    """SIGKILL right after an episode was written to the store and before actor.json counted it; the rerun adopts
    it (no duplicate), then finishes the stage; every finished episode is there exactly once."""
    run_dir = tmp_path / "run"
    command = [sys.executable, str(HERE / "cycle_worker.py"), str(run_dir), "5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([*command, "2.0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if line.startswith("written 2"):
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(30)
    assert process.returncode == -signal.SIGKILL, "".join(output)
    progress = json.loads((run_dir / STAGE / "actor.json").read_text())
    assert progress["episodes"] == 2 and _indices(run_dir) == [0, 1, 2]  # written, not yet counted

    rerun = subprocess.run([*command, "0"], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "adopting episode 2" in rerun.stdout and "done 5" in rerun.stdout
    progress = json.loads((run_dir / STAGE / "actor.json").read_text())
    assert progress["episodes"] == 5 and [h["episode"] for h in progress["history"]] == [0, 1, 2, 3, 4]
    assert _indices(run_dir) == [0, 1, 2, 3, 4]
    metrics = [json.loads(line) for line in (run_dir / STAGE / "metrics.jsonl").read_text().splitlines()]
    assert [m["episode"] for m in metrics] == [0, 1, 2, 3, 4]

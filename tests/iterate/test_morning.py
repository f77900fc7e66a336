"""The morning report (irevla.iterate.morning) of a run directory written by the real cycle: a real simulated env,
the scripted expert (so there are successes), a failing reset hook that stops the run, a rerun that resumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("metaworld")

from cycle_helpers import STAGE, run_episodes  # noqa: E402

from irevla.atomic_io import atomic_write_text  # noqa: E402
from irevla.cli import main  # noqa: E402
from irevla.iterate.cycle import CycleConfig, CycleStopped, read_events  # noqa: E402
from irevla.iterate.morning import write_morning_report  # noqa: E402

QUICK = {"retry_every_s": 0.05, "max_wait_s": 30.0}


def _labels(index: int) -> dict:
    """What other parts of the loop record per episode: the label's source and a detector disagreement."""
    return {"success_source": "detector" if index % 2 else "env", "disagreement": index == 3}


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


def test_the_morning_report_of_a_night_with_a_stop_and_a_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_episodes(run_dir, 3, CycleConfig(**QUICK), expert=True, max_episode_steps=150, extra=_labels,
                 log=lambda m: None)
    failing = CycleConfig(reset_hook="echo 'the bin is full' >&2; exit 2", retry_every_s=0.05, max_wait_s=30,
                          max_resets_failed_in_a_row=2)
    with pytest.raises(CycleStopped):
        run_episodes(run_dir, 5, failing, expert=True, max_episode_steps=150, extra=_labels, log=lambda m: None)
    # Between the runs, the report shows the open pause and what to do.
    write_morning_report(run_dir)
    text = (run_dir / "morning.md").read_text()
    assert "**Stopped at episode 3" in text and "reset_hook" in text and "the bin is full" in text
    assert "stopped the run; still paused" in text

    # Rerun: the pause ends, two more episodes (the camera drops once), then the learner's records.
    run_episodes(run_dir, 5, CycleConfig(**QUICK), expert=True, max_episode_steps=150, extra=_labels,
                 failing_resets={1}, log=lambda m: None)
    learner = run_dir / STAGE / "learner" / "episodes"
    learner.mkdir(parents=True)
    (learner / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i, "episode/index": i, "episode/interventions": i - 1, "episode/steps": 50}) + "\n"
        for i in range(1, 6)))  # the learner counts from 1: its episode i is the actor's episode i - 1
    atomic_write_text(run_dir / "state.json", json.dumps({"stages": {
        "sft": {"seconds": 5400.0, "finished": "2025-01-01T23:30:00"},
        "eval-0": {"seconds": 600.0, "finished": "2025-01-01T23:40:00"}}}))

    assert main(["iterate", "morning", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    text = (run_dir / "morning.md").read_text()
    assert text in printed and "morning.png" in printed
    progress = json.loads((run_dir / STAGE / "actor.json").read_text())
    successes = sum(h["success"] for h in progress["history"])
    assert progress["episodes"] == 5 and successes >= 3  # the scripted expert presses the button
    assert f"- episodes: 5, successes: {successes}, env steps: {progress['env_steps']}" in text

    # Per hour: over the span of the counted episodes' attempts (from events.jsonl), pauses included.
    events = read_events(run_dir / "events.jsonl")
    last = {e["episode"]: e for e in events if e["event"] == "episode"}
    span = max(e["ended"] for e in last.values()) - min(e["ended"] - e["seconds"] for e in last.values())
    assert f"episodes per hour: {5 / (span / 3600):.1f}, successes per hour: {successes / (span / 3600):.1f}" in text
    rows = re.findall(r"^\| \d\d-\d\d \d\d:00 \| (\d+) \| (\d+) \|", text, flags=re.M)
    assert sum(int(r[0]) for r in rows) == 5 and sum(int(r[1]) for r in rows) == successes

    # Interventions from the learner's records (the actor's history has none): 0+1+2+3+4 over 5 episodes.
    assert "- interventions per episode: 2.00 (4 of 5 episodes had any)" in text
    assert "- detector disagreements: 1 in 5 episodes" in text
    assert "- labels decided by: detector 2, env 3" in text
    # Two pauses: the hook's (stopped the run, resumed by the rerun) and the camera's; the faults by kind.
    assert "- faults (failed attempts): observation 1, reset_hook 2" in text
    assert "- paused: 2 time(s)" in text
    pause_rows = [line for line in text.splitlines() if line.startswith("| 20") and "reset_hook" in line]
    assert len(pause_rows) == 1 and "the bin is full" in pause_rows[0] and "| 2 |" in pause_rows[0]
    assert pause_rows[0].endswith("| resumed after a restart |")
    assert any("observation" in line and line.endswith("| resumed |") for line in text.splitlines())
    assert "**Stopped" not in text  # the pause is over
    # What ran: the finished stages with their times, the stage-1 stage unfinished.
    assert "| sft | done | 1.50 h | 2025-01-01T23:30:00 |" in text and "| rl-1 | unfinished |" in text
    assert "Stage times: sft 1.50 h, eval-0 10.0 min" in text
    _assert_png(run_dir / "morning.png")


def test_a_run_without_cycle_records_still_gets_a_report(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "rl-1").mkdir(parents=True)
    atomic_write_text(run_dir / "state.json", json.dumps({"stages": {"eval-0": {"seconds": 12.0}}}))
    atomic_write_text(run_dir / "rl-1" / "actor.json", json.dumps({"episodes": 2, "env_steps": 30, "history": [
        {"episode": 0, "success": True, "steps": 10}, {"episode": 1, "success": False, "steps": 20}]}))
    (run_dir / "events.jsonl").write_text('{"event": "episode", "stage": "rl-1", "episo')  # a torn line
    write_morning_report(run_dir)
    text = (run_dir / "morning.md").read_text()
    assert "- episodes: 2, successes: 1, env steps: 30" in text
    assert "episodes per hour: n/a" in text and "interventions per episode: n/a (not recorded)" in text
    assert "detector disagreements: n/a" in text and "- paused: 0 time(s)" in text
    _assert_png(run_dir / "morning.png")


def test_a_missing_run_directory_is_one_clear_error(tmp_path, capsys):
    assert main(["iterate", "morning", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err

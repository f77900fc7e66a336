"""The morning report of an unattended run: what ran overnight, how fast, and where it stopped.

``irevla iterate morning RUN_DIR`` (or `write_morning_report`) reads what the run left in its directory --

* ``state.json``: the finished stages and their times;
* ``rl-K/actor.json``: each counted stage-1 episode (success, steps; where recorded, ``interventions``, the label's
  ``success_source`` / ``source`` and a detector ``disagreement`` -- or ``false_success`` / ``missed_success``);
* ``rl-K/learner/episodes/metrics.jsonl``: the learner's per-episode records (``episode/interventions``), used where the
  actor's history has no interventions;
* ``events.jsonl`` (written by `irevla.iterate.cycle`): when each episode ended, faults, pauses, resumes, stops;
* ``rl-K/pause.json``: a pause still open (the run stopped, or is waiting right now)

-- and writes ``morning.md`` (tables) and ``morning.png`` (episodes and successes per hour, cumulative progress
with the pauses shaded, interventions per episode), both atomically. Everything is optional: a run without events
(an older run, or a simulated one) still gets its stages and episode counts; what was not recorded reads "n/a".
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from irevla.atomic_io import atomic_write_bytes, atomic_write_text
from irevla.errors import MissingFileError
from irevla.iterate.cycle import EVENTS_FILE, PAUSE_FILE, read_events

MORNING_MD = "morning.md"
MORNING_PNG = "morning.png"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _clock(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _stage_order(name: str) -> int:
    return int(name.split("-")[1]) if name.split("-")[-1].isdigit() else 0


# ------------------------------------------------------------------------------------------------- per stage
def _interventions(episode: dict, learner: dict[int, float]) -> float | None:
    value = episode.get("interventions")
    if isinstance(value, (bool, int, float)):
        return float(value)
    # the learner counts episodes from 1 (episode/index), the actor's history from 0
    return learner.get(int(episode.get("episode", -2)) + 1)


def _disagreement(episode: dict) -> bool | None:
    if "disagreement" in episode:
        return bool(episode["disagreement"])
    if "false_success" in episode or "missed_success" in episode:
        return bool(episode.get("false_success")) or bool(episode.get("missed_success"))
    return None


def _pauses(events: list[dict], stage: str, open_pause: dict | None, now: float) -> list[dict]:
    """Each pause of `stage`: since, kind, reason, failed attempts, how it ended, its duration."""
    pauses: list[dict] = []
    current: dict | None = None
    for event in events:
        if event.get("stage") != stage:
            continue
        kind = event["event"]
        if kind == "pause":
            current = {"since": event.get("t"), "episode": event.get("episode"), "kind": event.get("kind"),
                       "reason": event.get("message", ""), "failures": 1, "ended": None, "seconds": None,
                       "outcome": "open", "stopped": None}
            pauses.append(current)
        elif current is None:
            continue
        elif kind in ("reset_failed", "episode_failed"):  # the one that opened the pause came before it
            current["failures"] += 1
        elif kind == "stop":
            current.update(stopped=event.get("t"), why_stopped=event.get("why", ""))
        elif kind == "resume":
            current.update(ended=event.get("t"), seconds=event.get("paused_s"),
                           outcome="resumed after a restart" if event.get("restarted") else "resumed")
            current = None
    if pauses and pauses[-1]["outcome"] == "open":
        last = pauses[-1]
        if last["stopped"] is not None:
            last.update(outcome="stopped the run" + ("; still paused" if open_pause else ""),
                        seconds=(now if open_pause else last["stopped"]) - (last["since"] or now))
        else:
            last.update(outcome="still paused" if open_pause else "open (the run was killed while paused)",
                        seconds=now - (last["since"] or now))
    return pauses


def stage_summary(run_dir: Path, stage: str, events: list[dict], now: float) -> dict:
    """Everything the morning report says about one stage-1 directory ``run_dir/<stage>``."""
    stage_dir = run_dir / stage
    progress = _read_json(stage_dir / "actor.json") or {}
    history = [h for h in progress.get("history", []) if isinstance(h, dict)]
    learner = {int(r["episode/index"]): float(r["episode/interventions"])
               for r in _read_jsonl(stage_dir / "learner" / "episodes" / "metrics.jsonl")
               if "episode/index" in r and "episode/interventions" in r}
    ended: dict[int, dict] = {}  # the last finished attempt of each index (a killed run may have run one twice)
    for event in events:
        if event.get("event") == "episode" and event.get("stage") == stage and not event.get("series"):
            ended[int(event["episode"])] = event
    episodes = []
    for h in history:
        index = int(h.get("episode", len(episodes)))
        event = ended.get(index, {})
        end = h.get("ended", event.get("ended"))
        seconds = h.get("seconds", event.get("seconds"))
        episodes.append({"episode": index, "success": bool(h.get("success")), "steps": int(h.get("steps", 0)),
                         "ended": None if end is None else float(end),
                         "seconds": None if seconds is None else float(seconds),
                         "interventions": _interventions(h, learner), "disagreement": _disagreement(h),
                         "source": h.get("success_source", h.get("source"))})
    timed = [e for e in episodes if e["ended"] is not None]
    span = None
    if timed:
        start = min(e["ended"] - (e["seconds"] or 0.0) for e in timed)
        span = max(e["ended"] for e in timed) - start
    open_pause = _read_json(stage_dir / PAUSE_FILE)
    pauses = _pauses(events, stage, open_pause, now)
    faults = Counter(e.get("kind", "?") for e in events
                     if e.get("stage") == stage and e.get("event") in ("reset_failed", "episode_failed"))
    counted_interventions = [e["interventions"] for e in episodes if e["interventions"] is not None]
    judged = [e["disagreement"] for e in episodes if e["disagreement"] is not None]
    hours = _per_hour(timed)
    for pause in pauses:
        _add_pause_to_hours(hours, pause)
    return {
        "stage": stage, "episodes": len(episodes), "successes": sum(e["success"] for e in episodes),
        "env_steps": int(progress.get("env_steps", sum(e["steps"] for e in episodes))),
        "timed_episodes": len(timed), "span_s": span,
        "episodes_per_hour": len(timed) / (span / 3600) if span else None,
        "successes_per_hour": sum(e["success"] for e in timed) / (span / 3600) if span else None,
        "interventions_per_episode": float(np.mean(counted_interventions)) if counted_interventions else None,
        "episodes_with_interventions": sum(v > 0 for v in counted_interventions) if counted_interventions else None,
        "interventions_recorded": len(counted_interventions),
        "disagreements": sum(judged) if judged else None, "judged_episodes": len(judged),
        "label_sources": dict(Counter(str(e["source"]) for e in episodes if e["source"] is not None)),
        "faults": dict(faults), "pauses": pauses, "paused_s": sum(p["seconds"] or 0.0 for p in pauses),
        "open_pause": open_pause, "hours": hours, "episode_list": episodes,
        "final": progress.get("final"),
    }


def _hour_of(t: float) -> float:
    local = time.localtime(t)
    return t - (local.tm_min * 60 + local.tm_sec + (t % 1))


def _per_hour(timed: list[dict]) -> dict[float, dict]:
    """Clock hours (their start, Unix time) -> episodes, successes, interventions, paused seconds."""
    hours: dict[float, dict] = {}
    for e in timed:
        hour = hours.setdefault(_hour_of(e["ended"]), {"episodes": 0, "successes": 0, "interventions": [],
                                                         "paused_s": 0.0})
        hour["episodes"] += 1
        hour["successes"] += int(e["success"])
        if e["interventions"] is not None:
            hour["interventions"].append(e["interventions"])
    return hours


def _add_pause_to_hours(hours: dict[float, dict], pause: dict) -> None:
    start, seconds = pause["since"], pause["seconds"]
    if start is None or not seconds:
        return
    end = start + seconds
    hour = _hour_of(start)
    while hour < end:
        overlap = min(end, hour + 3600) - max(start, hour)
        if overlap > 0:
            hours.setdefault(hour, {"episodes": 0, "successes": 0, "interventions": [], "paused_s": 0.0})
            hours[hour]["paused_s"] += overlap
        hour += 3600


# --------------------------------------------------------------------------------------------------- report
def build_morning_report(run_dir: Path, now: float | None = None) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"{run_dir}: run directory not found")
    now = time.time() if now is None else now
    state = _read_json(run_dir / "state.json") or {"stages": {}}
    events = read_events(run_dir / EVENTS_FILE)
    stage_dirs = sorted((p.name for p in run_dir.glob("rl-*") if p.is_dir() and p.name[3:].isdigit()),
                        key=_stage_order)
    stages = [{"stage": name, "seconds": out.get("seconds"), "finished": out.get("finished"), "done": True}
              for name, out in state.get("stages", {}).items()]
    for name in stage_dirs:
        if name not in state.get("stages", {}):
            stages.append({"stage": name, "seconds": None, "finished": None, "done": False})
    times = [e["t"] for e in events if isinstance(e.get("t"), (int, float))]
    return {"run_dir": str(run_dir), "generated": now, "stages": stages,
            "rl": [stage_summary(run_dir, name, events, now) for name in stage_dirs],
            "first_event": min(times) if times else None, "last_event": max(times) if times else None}


def _rate(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_morning(report: dict) -> str:
    lines = [f"# Morning report: {report['run_dir']}", "", f"Written {_clock(report['generated'])}."]
    if report["first_event"] is not None:
        lines.append(f"Unattended cycle events from {_clock(report['first_event'])} to "
                     f"{_clock(report['last_event'])}.")
    lines += ["", "## What ran", "", "| stage | status | time | finished |", "|---|---|---|---|"]
    for stage in report["stages"]:
        status = "done" if stage["done"] else "unfinished"
        lines.append(f"| {stage['stage']} | {status} | {_duration(stage['seconds']) if stage['done'] else ''} | "
                     f"{stage['finished'] or ''} |")
    lines.append("")
    for rl in report["rl"]:
        name = rl["stage"]
        lines += [f"## {name}: stage-1 episodes", "",
                  f"- episodes: {rl['episodes']}, successes: {rl['successes']}, env steps: {rl['env_steps']}",
                  f"- episodes per hour: {_rate(rl['episodes_per_hour'])}, successes per hour: "
                  f"{_rate(rl['successes_per_hour'])} (over {_duration(rl['span_s'])} from the first episode's "
                  f"start to the last one's end, {rl['timed_episodes']} timed episodes, pauses included)"]
        if rl["interventions_per_episode"] is None:
            lines.append("- interventions per episode: n/a (not recorded)")
        else:
            lines.append(f"- interventions per episode: {rl['interventions_per_episode']:.2f} "
                         f"({rl['episodes_with_interventions']} of {rl['interventions_recorded']} episodes had any)")
        if rl["disagreements"] is None:
            lines.append("- detector disagreements: n/a (no episode recorded one)")
        else:
            lines.append(f"- detector disagreements: {rl['disagreements']} in {rl['judged_episodes']} episodes")
        if rl["label_sources"]:
            lines.append("- labels decided by: " + ", ".join(f"{source} {count}"
                                                            for source, count in sorted(rl["label_sources"].items())))
        if rl["final"]:
            lines.append(f"- final head: {sum(rl['final'])}/{len(rl['final'])} successes")
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(rl["faults"].items())) or "none"
        lines += [f"- faults (failed attempts): {faults}",
                  f"- paused: {len(rl['pauses'])} time(s), {_duration(rl['paused_s'])} in all", ""]
        if rl["open_pause"]:
            pause = rl["open_pause"]
            lines += [f"**{'Stopped' if pause.get('stopped') else 'Paused'} at episode {pause.get('episode')} since "
                      f"{pause.get('since')}: {pause.get('kind')}: {pause.get('reason')}.** What to do: "
                      f"{pause.get('what_to_do')}; then {pause.get('retry')}.", ""]
        if rl["hours"]:
            lines += ["| hour | episodes | successes | success rate | interventions / episode | paused |",
                      "|---|---|---|---|---|---|"]
            for hour, row in sorted(rl["hours"].items()):
                rate = row["successes"] / row["episodes"] if row["episodes"] else None
                interventions = float(np.mean(row["interventions"])) if row["interventions"] else None
                lines.append(f"| {time.strftime('%m-%d %H:00', time.localtime(hour))} | {row['episodes']} | "
                             f"{row['successes']} | {_rate(rate, 2)} | {_rate(interventions, 2)} | "
                             f"{_duration(row['paused_s']) if row['paused_s'] else ''} |")
            lines.append("")
        if rl["pauses"]:
            lines += ["| paused at | episode | kind | reason | failed attempts | duration | outcome |",
                      "|---|---|---|---|---|---|---|"]
            for pause in rl["pauses"]:
                reason = str(pause["reason"]).replace("|", "/")
                lines.append(f"| {_clock(pause['since'])} | {pause['episode']} | {pause['kind']} | {reason} | "
                             f"{pause['failures']} | {_duration(pause['seconds'])} | {pause['outcome']} |")
            lines.append("")
    done = [s for s in report["stages"] if s["done"] and s["seconds"] is not None]
    if done:
        lines += ["Stage times: " + ", ".join(f"{s['stage']} {_duration(s['seconds'])}" for s in done), ""]
    return "\n".join(lines)


def plot_morning(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / max(1, len(report["rl"]))
    for i, rl in enumerate(report["rl"]):
        hours = sorted(h for h, row in rl["hours"].items() if row["episodes"])
        if hours:
            x = np.array([(h - hours[0]) / 3600 for h in hours]) + i * width
            axes[0].bar(x, [rl["hours"][h]["episodes"] for h in hours], width, alpha=0.4,
                        label=f"{rl['stage']} episodes")
            axes[0].bar(x, [rl["hours"][h]["successes"] for h in hours], width, label=f"{rl['stage']} successes")
            axes[0].set_xticks(x, [time.strftime("%H:00", time.localtime(h)) for h in hours])
        timed = sorted((e for e in rl["episode_list"] if e["ended"] is not None), key=lambda e: e["ended"])
        if timed:
            origin = report["first_event"] or timed[0]["ended"]
            t = [(e["ended"] - origin) / 3600 for e in timed]
            axes[1].plot(t, np.arange(1, len(timed) + 1), label=f"{rl['stage']} episodes")
            axes[1].plot(t, np.cumsum([e["success"] for e in timed]), label=f"{rl['stage']} successes")
            for pause in rl["pauses"]:
                if pause["since"] is not None and pause["seconds"]:
                    start = (pause["since"] - origin) / 3600
                    axes[1].axvspan(start, start + pause["seconds"] / 3600, color="red", alpha=0.2)
        counted = [(e["episode"], e["interventions"]) for e in rl["episode_list"] if e["interventions"] is not None]
        if counted:
            axes[2].plot([c[0] for c in counted], [c[1] for c in counted], ".", alpha=0.5)
            values = np.array([c[1] for c in counted])
            window = min(10, len(values))
            axes[2].plot([c[0] for c in counted][window - 1:], np.convolve(values, np.ones(window) / window, "valid"),
                         label=f"{rl['stage']} (mean of {window})")
    axes[0].set_xlabel("clock hour")
    axes[0].set_ylabel("per hour")
    axes[0].set_title("episodes and successes per hour")
    axes[1].set_xlabel("hours since the first event")
    axes[1].set_ylabel("cumulative")
    axes[1].set_title("progress (pauses in red)")
    axes[2].set_xlabel("episode")
    axes[2].set_ylabel("interventions")
    axes[2].set_title("interventions per episode")
    if not any(e["interventions"] is not None for rl in report["rl"] for e in rl["episode_list"]):
        axes[2].text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes[2].transAxes)
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_morning_report(run_dir: str | Path, now: float | None = None) -> dict[str, Any]:
    """Write ``run_dir/morning.md`` and ``run_dir/morning.png`` (atomically); return the report's data."""
    run_dir = Path(run_dir)
    report = build_morning_report(run_dir, now)
    atomic_write_text(run_dir / MORNING_MD, format_morning(report))
    atomic_write_bytes(run_dir / MORNING_PNG, plot_morning(report))
    return report

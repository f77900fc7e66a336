"""``irevla reward eval``: what a trained detector would have done on episodes it has not seen.

Per episode: the frame at which the decision rule would have ended it, against the labels (`irevla.reward.labels`):
``true_positive`` (ended on a success frame), ``false_positive`` (ended on a frame that is not a success: a failed
episode declared a success, or a success declared too early), ``early`` (in the ignored frames just before the
success), ``false_negative`` (a success it never declared), ``true_negative``. False positives and negatives are
listed with their frame indices, and the frames the detector was most sure of wrongly are drawn on a contact sheet
(``false_positives.png``): that is where more negative data helps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irevla.reward.detector import DetectorError, SuccessDetector
from irevla.reward.train import confusion, encode_episodes, episode_outcomes, rates

Log = Callable[[str], None]


def evaluate_detector(model: str | Path, data: Sequence[str | Path], out: str | Path | None = None, *,
                      policy_dir: str | Path | None = None, task: str | None = None, sheet_frames: int = 12,
                      progress: bool = True, log: Log = print) -> dict[str, Any]:
    """Evaluate the detector in `model` on the episodes in `data`; writes eval.json, eval.md and
    false_positives.png into `out` (default: ``<model>/eval``) and returns eval.json's content."""
    from irevla.atomic_io import atomic_write_text
    from irevla.data.store import EpisodeCollection
    from irevla.policy.checkpoint import load_policy
    from irevla.reward.features import FrameEncoder, vlm_fingerprint

    detector = SuccessDetector.load(model)
    policy_dir = Path(policy_dir or detector.settings["policy"])
    detector.check_vlm(vlm_fingerprint(policy_dir), policy_dir, Path(model) / "detector.json")
    infos = EpisodeCollection([str(d) for d in data]).index(task=task)
    if not infos:
        raise DetectorError(f"no episodes in {[str(d) for d in data]}" + (f" (task {task})" if task else ""))
    labels_settings = detector.settings["labels"]
    encoded = encode_episodes(infos, FrameEncoder(load_policy(policy_dir)), labels_settings["positive_frames"],
                              labels_settings["ignore_before"], progress)
    rows = episode_outcomes(detector, encoded)
    frames_p = [detector.probabilities(detector.episode_features(e.latent, e.proprio)) for e in encoded]
    p_all = np.concatenate(frames_p)
    labels_all = np.concatenate([e.labels for e in encoded])
    # ignored frames (just before a success) count as negatives here: a success declared there is premature
    matrix = confusion(p_all, (labels_all == 1).astype(np.float32), detector.threshold)
    outcomes = [row["outcome"] for row in rows]
    counts = {kind: outcomes.count(kind) for kind in
              ("true_positive", "false_positive", "early", "false_negative", "true_negative")}
    declared = counts["true_positive"] + counts["false_positive"] + counts["early"]
    report: dict[str, Any] = {
        "model": str(model), "policy": str(policy_dir), "threshold": detector.threshold,
        "confirm_frames": detector.confirm_frames, "episodes": len(rows), "episode_counts": counts,
        "episode_precision": counts["true_positive"] / declared if declared else None,
        "episode_recall": (counts["true_positive"] / (counts["true_positive"] + counts["false_negative"] + counts["early"])
                           if counts["true_positive"] + counts["false_negative"] + counts["early"] else None),
        "false_successes_per_100": 100.0 * counts["false_positive"] / len(rows),
        "frames": {**matrix, **rates(matrix)},
        "false_positives": [{"episode": r["episode"], "frame": r["fired_at"], "p": r["p_at_fire"],
                             "first_success_frame": r["first_success_frame"]} for r in rows
                            if r["outcome"] == "false_positive"],
        "false_negatives": [{"episode": r["episode"], "first_success_frame": r["first_success_frame"],
                             "p_max": r["p_max"]} for r in rows if r["outcome"] == "false_negative"],
        "episodes_detail": rows}
    out = Path(out) if out is not None else Path(model) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    confident = _most_confident_wrong(encoded, frames_p, detector.threshold, sheet_frames)
    report["sheet"] = [{"episode": str(path), "frame": frame, "p": p} for path, frame, p in confident]
    if confident:
        _contact_sheet(confident, out / "false_positives.png")
    atomic_write_text(out / "eval.json", json.dumps(report, indent=1))
    atomic_write_text(out / "eval.md", format_eval(report))
    log(format_eval(report).split("\n\n")[1])
    return report


def _most_confident_wrong(encoded, frames_p, threshold: float, count: int) -> list[tuple[Path, int, float]]:
    """The `count` negative frames scored highest at or above the threshold: (episode path, frame, p)."""
    wrong = [(float(p[t]), e.path, int(t)) for e, p in zip(encoded, frames_p, strict=True)
             for t in np.flatnonzero((e.labels == 0) & (p >= threshold))]
    wrong.sort(key=lambda item: -item[0])
    return [(path, frame, p) for p, path, frame in wrong[:count]]


def _contact_sheet(frames: list[tuple[Path, int, float]], out: Path) -> None:
    from PIL import Image, ImageDraw

    from irevla.atomic_io import commit_file
    from irevla.data.store import read_episode

    tiles = []
    cache: dict[Path, Any] = {}
    for path, frame, p in frames:
        if path not in cache:
            cache = {path: read_episode(path)}  # one episode's images in memory at a time
        episode = cache[path]
        images = [episode.images[c][frame] for c in sorted(episode.images)]
        tile = Image.fromarray(np.concatenate(images, axis=1)).resize(
            (160 * len(images), 160), Image.Resampling.NEAREST)
        canvas = Image.new("RGB", (tile.width, tile.height + 28), "white")
        canvas.paste(tile, (0, 28))
        draw = ImageDraw.Draw(canvas)
        draw.text((3, 1), f"{path.name[:28]}", fill="black")
        draw.text((3, 14), f"frame {frame}  p={p:.3f}", fill="darkred")
        tiles.append(canvas)
    columns = min(4, len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    width, height = max(t.width for t in tiles), max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * width, (i // columns) * height))
    temp = out.with_name(out.name + ".tmp.png")
    sheet.save(temp)
    commit_file(temp, out)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_eval(report: dict[str, Any]) -> str:
    counts = report["episode_counts"]
    lines = [f"# Detector evaluation: {report['model']}",
             "",
             f"{report['episodes']} episodes at threshold {report['threshold']:.4f} ({report['confirm_frames']} "
             f"frame(s) to confirm): episode precision {_figure(report['episode_precision'])}, recall "
             f"{_figure(report['episode_recall'])}, {report['false_successes_per_100']:.1f} false successes per 100 "
             f"episodes ({counts['true_positive']} on time, {counts['false_positive']} false, {counts['early']} "
             f"early, {counts['false_negative']} missed, {counts['true_negative']} rightly not ended); frames: "
             f"precision {_figure(report['frames']['precision'])}, recall {_figure(report['frames']['recall'])}",
             "", "## False positives (the detector would have ended these episodes as successes)", ""]
    lines += [f"- {Path(r['episode']).name}: frame {r['frame']} (p {r['p']:.3f}; first success frame "
              f"{r['first_success_frame']})" for r in report["false_positives"]] or ["- none"]
    lines += ["", "## False negatives (successes it never declared)", ""]
    lines += [f"- {Path(r['episode']).name}: success from frame {r['first_success_frame']}, highest p "
              f"{r['p_max']:.3f}" for r in report["false_negatives"]] or ["- none"]
    if report["sheet"]:
        lines += ["", "The most confident wrong frames: ![false positives](false_positives.png)"]
    return "\n".join(lines) + "\n"

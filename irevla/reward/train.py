"""``irevla reward train``: a success detector from episodes, on the frozen VLM of a given policy.

1. Every observation of every episode goes once through the policy's frozen VLM (`irevla.reward.features`): the
   long part, with a progress bar.
2. Frames get labels (`irevla.reward.labels`); episodes are split into training and validation, successes and
   failures each on their own so that both sides have both (`irevla.data.split`: a pure function of the file name).
3. A small MLP learns success from the standardised features (class-weighted binary cross-entropy, AdamW); the
   epoch with the lowest validation loss is kept. Loss and validation precision/recall go to TensorBoard
   (``<out>/tensorboard``) and ``<out>/metrics.jsonl``.
4. The decision threshold is chosen on the validation frames: the lowest one whose precision reaches the target
   (default 0.99) -- the highest recall at that precision. A false success poisons D_RL and stage 2; a missed one
   costs only an episode. If no threshold reaches the target, the most precise one is kept, the report says so and
   ``target_met`` is false in detector.json.
5. ``<out>`` gets the detector (`irevla.reward.detector`), ``report.json`` (frame and episode figures on both
   splits, the confusion matrix at the threshold), ``pr_curve.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irevla.reward.detector import DetectorError, DetectorNet, SuccessDetector
from irevla.reward.labels import IGNORED, frame_labels

Log = Callable[[str], None]


@dataclass
class EncodedEpisode:
    path: Path
    latent: np.ndarray  # (T + 1, 2 d) pooled hidden states
    proprio: np.ndarray  # (T + 1, P)
    labels: np.ndarray  # (T + 1,) 1 / 0 / -1
    success: bool


def encode_episodes(infos: Sequence, encoder, positive_frames: int, ignore_before: int, progress: bool = True,
                    desc: str = "encoding frames") -> list[EncodedEpisode]:
    """Every frame of `infos`' episodes through the frozen VLM, with its label (one episode in memory at a time)."""
    from tqdm import tqdm

    from irevla.data.store import read_episode

    frames = sum(info.n_steps + 1 for info in infos)
    out = []
    with tqdm(total=frames, desc=desc, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for info in infos:
            episode = read_episode(info.path)
            try:
                latent, proprio = encoder.episode(episode)
            except Exception as exc:  # noqa: BLE001 -- name the episode whatever the policy refused
                raise DetectorError(f"{info.path}: cannot be encoded by this policy: {type(exc).__name__}: "
                                    f"{exc}") from None
            out.append(EncodedEpisode(info.path, latent, proprio, frame_labels(episode, positive_frames, ignore_before),
                                      episode.success))
            bar.update(episode.n_steps + 1)
    return out


def precision_recall(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The PR curve over every distinct score as threshold (``p >= threshold`` is positive)."""
    order = np.argsort(-probabilities, kind="stable")
    scores, truth = probabilities[order], labels[order].astype(bool)
    true_positives = np.cumsum(truth)
    predicted = np.arange(1, len(truth) + 1)
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # the last index of each distinct score
    return {"threshold": scores[last], "precision": true_positives[last] / predicted[last],
            "recall": true_positives[last] / max(int(truth.sum()), 1), "predicted": predicted[last]}


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray, target_precision: float) -> tuple[float, bool]:
    """(threshold, target met): the lowest threshold with precision >= target (the most recall there); if none,
    the threshold of the highest precision (the most recall among equals)."""
    curve = precision_recall(probabilities, labels)
    meets = np.flatnonzero(curve["precision"] >= target_precision)
    if len(meets):
        return float(curve["threshold"][meets[-1]]), True
    best = np.flatnonzero(curve["precision"] == curve["precision"].max())
    return float(curve["threshold"][best[-1]]), False


def confusion(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    predicted, truth = probabilities >= threshold, labels.astype(bool)
    return {"true_positive": int((predicted & truth).sum()), "false_positive": int((predicted & ~truth).sum()),
            "false_negative": int((~predicted & truth).sum()), "true_negative": int((~predicted & ~truth).sum())}


def rates(matrix: dict[str, int]) -> dict[str, float | None]:
    tp, fp, fn = matrix["true_positive"], matrix["false_positive"], matrix["false_negative"]
    return {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None}


def episode_outcomes(detector: SuccessDetector, episodes: Sequence[EncodedEpisode]) -> list[dict[str, Any]]:
    """Per episode: where the decision rule would have ended it, and whether that frame is a labelled success."""
    rows = []
    for item in episodes:
        p = detector.probabilities(detector.episode_features(item.latent, item.proprio))
        fired = detector.decide(p)
        positives = np.flatnonzero(item.labels == 1)
        first_true = int(positives[0]) if len(positives) else None
        if fired is None:
            kind = "false_negative" if item.success else "true_negative"
        elif item.labels[fired] == 1:
            kind = "true_positive"
        elif item.labels[fired] == IGNORED:
            kind = "early"  # in the frames just before the success: not a false success, not on time either
        else:
            kind = "false_positive"
        rows.append({"episode": str(item.path), "success": item.success, "fired_at": fired,
                     "first_success_frame": first_true, "frames": len(p), "outcome": kind,
                     "p_at_fire": float(p[fired]) if fired is not None else None, "p_max": float(p.max())})
    return rows


def _stack(detector: SuccessDetector, episodes: Sequence[EncodedEpisode], strict: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's stacked inputs and label. Ignored frames are left out of training (no honest label), but with
    `strict` (validation: the threshold, the figures) they count as negatives: a success declared in the frames
    just before the real one ends the episode before the task is done, which in stage 1 is a false success."""
    features = np.concatenate([detector.episode_features(e.latent, e.proprio) for e in episodes])
    labels = np.concatenate([e.labels for e in episodes])
    if strict:
        return features, (labels == 1).astype(np.float32)
    keep = labels != IGNORED
    return features[keep], labels[keep].astype(np.float32)


@dataclass(frozen=True)
class Candidate:
    """One choice of what the detector reads per frame."""

    inputs: tuple[str, ...]
    latent_dims: int = 8  # principal components of the pooled hidden states (0: all)
    context: int = 2

    @property
    def name(self) -> str:
        parts = [f"latent[{self.latent_dims or 'all'}]" if part == "latent" else part for part in self.inputs]
        return "+".join(parts) + (f", context {self.context}" if self.context else "")


# ``--inputs auto``: each is trained, the best validation average precision wins (simpler first on ties). The VLM's
# pooled states whole (what the VLM alone tells), projected, with motion, the proprio alone, and both.
AUTO_CANDIDATES = (Candidate(("latent",), 0, 0), Candidate(("latent",), 8, 2), Candidate(("proprio",), 0, 2),
                   Candidate(("latent", "proprio"), 8, 2), Candidate(("latent", "proprio"), 0, 0))


def average_precision(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve (mean precision at each positive, ranked by score)."""
    order = np.argsort(-probabilities, kind="stable")
    truth = labels[order].astype(bool)
    precision = np.cumsum(truth) / np.arange(1, len(truth) + 1)
    return float(precision[truth].mean()) if truth.any() else 0.0


def _prepare(candidate: Candidate, base: dict, train: Sequence[EncodedEpisode], val: Sequence[EncodedEpisode],
             latent_size: int, proprio_size: int):
    """An untrained detector for `candidate` (its principal components fitted on the training frames) and the
    stacked training / validation inputs."""
    import torch

    uses_latent = "latent" in candidate.inputs
    dims = min(candidate.latent_dims, latent_size) if uses_latent else 0
    frame_size = ((dims or latent_size) if uses_latent else 0) + (proprio_size if "proprio" in candidate.inputs
                                                                  else 0)
    net = DetectorNet(frame_size * (candidate.context + 1), int(base["hidden"]), latent_size, dims)
    if dims:
        mean, basis = _principal_components(np.concatenate([e.latent for e in train]), dims)
        net.latent_mean.copy_(torch.from_numpy(mean))
        net.latent_basis.copy_(torch.from_numpy(basis))
    settings = {**base, "features": {"pooling": "mean+max", "inputs": list(candidate.inputs),
                                     "latent_size": int(latent_size), "latent_dims": int(dims),
                                     "proprio_size": int(proprio_size), "context": candidate.context,
                                     "dim": int(frame_size * (candidate.context + 1))}}
    detector = SuccessDetector(net, settings)
    return (detector, *_stack(detector, train), *_stack(detector, val, strict=True))


def _principal_components(latent: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, basis (L, dims)) of the training frames' pooled hidden states."""
    mean = latent.mean(axis=0)
    _, _, vt = np.linalg.svd(latent - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dims].T.astype(np.float32)


def _fit(net: DetectorNet, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
         epochs: int, seed: int, metrics, progress: bool, prefix: str = "") -> tuple[DetectorNet, dict[str, float]]:
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    net.feature_mean.copy_(torch.from_numpy(mean))
    net.feature_std.copy_(torch.from_numpy(np.maximum(std, 1e-3 * max(float(std.mean()), 1e-6))))
    positives = float(train_y.sum())
    pos_weight = torch.tensor((len(train_y) - positives) / max(positives, 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    generator = torch.Generator().manual_seed(seed)
    batch = 256
    best: tuple[float, dict, int] = (float("inf"), {}, -1)
    for epoch in tqdm(range(epochs), desc=f"training detector {prefix.rstrip('/')}".rstrip(), unit="epoch",
                      disable=not progress, dynamic_ncols=True):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch):
            index = order[start:start + batch]
            loss = loss_fn(net(x[index]), y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        net.eval()
        with torch.no_grad():
            val_logits = net(vx)
            val_loss = float(loss_fn(val_logits, vy))
        if val_loss < best[0]:
            best = (val_loss, {k: v.clone() for k, v in net.state_dict().items()}, epoch)
        if epoch % 10 == 0 or epoch == epochs - 1:
            p = torch.sigmoid(val_logits).numpy()
            r = rates(confusion(p, val_y, 0.5))
            metrics.write({"step": epoch, f"{prefix}loss": total / len(x), f"{prefix}val_loss": val_loss,
                           f"{prefix}val_precision@0.5": r["precision"], f"{prefix}val_recall@0.5": r["recall"]})
    net.load_state_dict(best[1])
    return net.eval(), {"best_epoch": best[2], "val_loss": best[0]}


def _plot(curve: dict[str, np.ndarray], threshold: float, target: float, matrix: dict[str, int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from irevla.atomic_io import commit_file

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.plot(curve["recall"], curve["precision"], drawstyle="steps-post")
    at = int(np.flatnonzero(curve["threshold"] >= threshold)[-1])
    left.plot([curve["recall"][at]], [curve["precision"][at]], "o", color="C3",
              label=f"threshold {threshold:.3f}: P {curve['precision'][at]:.3f}, R {curve['recall'][at]:.3f}")
    left.axhline(target, color="0.6", linestyle="--", label=f"target precision {target}")
    left.set(xlabel="recall", ylabel="precision", title="validation frames", xlim=(0, 1.02), ylim=(0, 1.02))
    left.legend(loc="lower left", fontsize=8)
    cells = np.array([[matrix["true_positive"], matrix["false_negative"]],
                      [matrix["false_positive"], matrix["true_negative"]]])
    right.imshow(cells, cmap="Blues")
    for (i, j), value in np.ndenumerate(cells):
        right.text(j, i, str(value), ha="center", va="center", fontsize=14)
    right.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["says success", "says not"],
              yticklabels=["success", "not success"], title="validation frames at the threshold")
    figure.tight_layout()
    temp = out.with_name(out.name + ".tmp.png")
    figure.savefig(temp, dpi=100)
    plt.close(figure)
    commit_file(temp, out)


def train_detector(data: Sequence[str | Path], policy_dir: str | Path, out: str | Path, *,
                   task: str | None = None, positive_frames: int = 1, ignore_before: int = 2, context: int = 2,
                   inputs: Sequence[str] | str = "auto", latent_dims: int = 8,
                   val_fraction: float = 0.25, target_precision: float = 0.99, confirm_frames: int = 2,
                   hidden: int = 64, epochs: int = 200, seed: int = 0, threads: int | None = None,
                   progress: bool = True, log: Log = print) -> dict[str, Any]:
    """Train, choose the threshold, evaluate and write the detector directory `out`; returns report.json's content."""
    import torch

    from irevla.atomic_io import atomic_write_text
    from irevla.data.split import split_by_episode
    from irevla.data.store import EpisodeCollection
    from irevla.metrics_log import MetricsLog
    from irevla.policy.checkpoint import load_policy
    from irevla.reward.features import FrameEncoder, vlm_fingerprint

    if not 0.0 < target_precision <= 1.0:
        raise DetectorError(f"--target-precision: expected a number in (0, 1], got {target_precision}")
    if confirm_frames < 1:
        raise DetectorError(f"--confirm-frames: expected >= 1, got {confirm_frames}")
    if inputs != "auto":
        inputs = tuple(dict.fromkeys(inputs))
        if not inputs or set(inputs) - {"latent", "proprio"}:
            raise DetectorError(f"--inputs: expected auto, latent, proprio or latent proprio, got {list(inputs)}")
    if threads:
        torch.set_num_threads(threads)
    started = time.monotonic()
    out = Path(out)
    infos = EpisodeCollection([str(d) for d in data]).index(task=task)
    where = f"{[str(d) for d in data]}" + (f" (task {task})" if task else "")
    if not infos:
        raise DetectorError(f"no episodes in {where}: nothing to learn success from")
    successes = [i for i in infos if i.success]
    failures = [i for i in infos if not i.success]
    if len(successes) < 2:
        raise DetectorError(f"{where}: {len(successes)} successful episode(s) of {len(infos)}: a detector needs at "
                            f"least 2 (one for training, one for validation); record successes or label frames")
    train_s, val_s = split_by_episode(successes, val_fraction, seed)
    train_f, val_f = split_by_episode(failures, val_fraction, seed) if len(failures) >= 2 else (failures, [])
    policy = load_policy(policy_dir)
    fingerprint = vlm_fingerprint(policy_dir)
    encoder = FrameEncoder(policy)
    log(f"{len(infos)} episodes ({len(successes)} successes, {len(failures)} failures): "
        f"{len(train_s) + len(train_f)} for training, {len(val_s) + len(val_f)} for validation")
    train = encode_episodes(train_s + train_f, encoder, positive_frames, ignore_before, progress,
                            "encoding training frames")
    val = encode_episodes(val_s + val_f, encoder, positive_frames, ignore_before, progress,
                          "encoding validation frames")
    latent_size, proprio_size = train[0].latent.shape[1], train[0].proprio.shape[1]
    base: dict[str, Any] = {
        "vlm": fingerprint, "policy": str(Path(policy_dir).resolve()), "policy_checkpoint": policy.checkpoint_id,
        "hidden": hidden, "labels": {"positive_frames": positive_frames, "ignore_before": ignore_before},
        "target_precision": target_precision, "confirm_frames": confirm_frames, "threshold": 0.5,
        "data": [str(Path(d).resolve()) for d in data], "task": task, "seed": seed}
    candidates = AUTO_CANDIDATES if inputs == "auto" else [Candidate(tuple(inputs), latent_dims, context)]
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics_dir = out.with_name(out.name + ".metrics")
    tried: list[dict] = []
    best: tuple = ()
    with MetricsLog(metrics_dir, job_type="reward-train") as metrics:
        for candidate in candidates:
            detector, train_x, train_y, val_x, val_y = _prepare(candidate, base, train, val, latent_size, proprio_size)
            for name, labels in (("training", train_y), ("validation", val_y)):
                if labels.sum() == 0 or labels.sum() == len(labels):
                    raise DetectorError(f"{where}: the {name} frames are all "
                                        f"{'positive' if labels.sum() else 'negative'} ({len(labels)} frames): a "
                                        f"detector needs both successes and non-successes")
            net, fit = _fit(detector.net, train_x, train_y, val_x, val_y, epochs, seed, metrics, progress,
                            prefix=f"{candidate.name}/" if len(candidates) > 1 else "")
            detector = SuccessDetector(net, detector.settings)
            val_p = detector.probabilities(val_x)
            score = average_precision(val_p, val_y)
            tried.append({"inputs": candidate.name, "val_average_precision": round(score, 4), **fit})
            if len(candidates) > 1:
                log(f"  inputs {candidate.name:32s} validation average precision {score:.3f}")
            if not best or score > best[0] + 1e-6:  # ties keep the earlier (simpler) candidate
                best = (score, detector, train_x, train_y, val_x, val_y, val_p, fit, candidate)
    _, detector, train_x, train_y, val_x, val_y, val_p, fit, chosen = best
    settings = detector.settings
    settings["candidates"] = tried
    threshold, met = choose_threshold(val_p, val_y, target_precision)
    detector.settings.update(threshold=threshold, target_met=met)
    val_matrix = confusion(val_p, val_y, threshold)
    train_matrix = confusion(detector.probabilities(train_x), train_y, threshold)
    report = {
        "episodes": {"train": len(train), "val": len(val), "successes": len(successes), "failures": len(failures)},
        "frames": {"train": len(train_y), "val": len(val_y), "train_positive": int(train_y.sum()),
                   "val_positive": int(val_y.sum())},
        "threshold": threshold, "target_precision": target_precision, "target_met": met, **fit,
        "inputs": chosen.name, "candidates": tried,
        "val_frames": {**val_matrix, **rates(val_matrix)}, "train_frames": {**train_matrix, **rates(train_matrix)},
        "val_episodes": episode_outcomes(detector, val), "seconds": round(time.monotonic() - started, 1)}
    outcomes = [row["outcome"] for row in report["val_episodes"]]
    report["val_episode_counts"] = {kind: outcomes.count(kind) for kind in
                                    ("true_positive", "false_positive", "early", "false_negative", "true_negative")}
    detector.settings["validation"] = {"frames": report["val_frames"], "episodes": report["val_episode_counts"]}
    detector.save(out)
    # The report files go in after the detector directory is in place (save replaces the directory as a whole).
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    _plot(precision_recall(val_p, val_y), threshold, target_precision, val_matrix, out / "pr_curve.png")
    atomic_write_text(out / "report.md", format_report(report, out))
    if metrics_dir.exists():
        metrics_dir.replace(out / "training")
    if not met:
        log(f"warning: no threshold reached precision {target_precision} on the validation frames; kept the most "
            f"precise one ({threshold:.4f}: precision {report['val_frames']['precision']}); add failed rollouts "
            f"(the negatives that look most like success) or lower --target-precision")
    log(format_summary(report, out))
    return report


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(report: dict[str, Any], out: Path) -> str:
    val = report["val_frames"]
    counts = report["val_episode_counts"]
    return (f"detector -> {out} (inputs {report['inputs']}): threshold {report['threshold']:.4f} (target precision {report['target_precision']}"
            f"{'' if report['target_met'] else ', NOT met'}); validation frames: precision {_figure(val['precision'])},"
            f" recall {_figure(val['recall'])}; validation episodes: {counts['true_positive']} ended on time, "
            f"{counts['false_positive']} false successes, {counts['early']} early, {counts['false_negative']} missed, "
            f"{counts['true_negative']} rightly not ended")


def format_report(report: dict[str, Any], out: Path) -> str:
    val, train = report["val_frames"], report["train_frames"]
    lines = [f"# Success detector: {out.name}", "", format_summary(report, out), "",
             "| split | frames | positive | precision | recall | TP | FP | FN | TN |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row, frames, positive in (("train", train, report["frames"]["train"], report["frames"]["train_positive"]),
                                        ("val", val, report["frames"]["val"], report["frames"]["val_positive"])):
        lines.append(f"| {name} | {frames} | {positive} | {_figure(row['precision'])} | {_figure(row['recall'])} | "
                     f"{row['true_positive']} | {row['false_positive']} | {row['false_negative']} | "
                     f"{row['true_negative']} |")
    lines += ["", f"Inputs: {report['inputs']}.", ""]
    if len(report["candidates"]) > 1:
        lines += ["| inputs tried | validation average precision | best epoch |", "|---|---|---|"]
        lines += [f"| {c['inputs']} | {c['val_average_precision']:.3f} | {c['best_epoch']} |"
                  for c in report["candidates"]]
    lines += ["", "![precision-recall](pr_curve.png)", "", "Validation episodes (where the rule would end them):", "",
              "| episode | success | ended at | first success frame | outcome |", "|---|---|---|---|---|"]
    for row in report["val_episodes"]:
        lines.append(f"| {Path(row['episode']).name} | {row['success']} | {row['fired_at']} | "
                     f"{row['first_success_frame']} | {row['outcome']} |")
    return "\n".join(lines) + "\n"

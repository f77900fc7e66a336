"""irevla.metrics_log: metrics.jsonl + TensorBoard events (read back with TensorBoard's own reader) + wandb offline;
a resumed log keeps each step once; the learner process can use it without loading torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from irevla.metrics_log import LoggingConfig, MetricsLog, MetricsLogError, WandbConfig, check_wandb, tag_of

REPO = Path(__file__).resolve().parents[1]


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in a TensorBoard log directory: [(step, value)], as TensorBoard shows them (purges
    applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def wandb_offline_history(wandb_dir: Path) -> dict[str, list[dict]]:
    """{run id: the history rows} of every offline wandb run under `wandb_dir`, read from the runs' .wandb files
    (a LevelDB-style log of protobuf records, the format `wandb sync` uploads)."""
    from wandb.proto import wandb_internal_pb2

    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(wandb_dir).rglob("offline-run-*/run-*.wandb")):
        rows = runs.setdefault(path.stem.removeprefix("run-"), [])
        for payload in _wandb_log_records(path.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return runs


def _wandb_log_records(data: bytes):
    assert data[:4] == b":W&B", "not a wandb run file"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        payload = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 1:  # full
            yield payload
        elif kind == 2:  # first
            pending = payload
        elif kind == 3:  # middle
            pending += payload
        elif kind == 4:  # last
            yield pending + payload


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_records_go_to_jsonl_and_tensorboard_and_a_resume_keeps_each_step_once(tmp_path):
    with MetricsLog(tmp_path, wandb=WandbConfig()) as log:
        for step in range(1, 6):
            log.write({"step": step, "loss": 1.0 / step, "stage": "sft", "done": step == 5})
        log.write({"step": 5, "val_loss": 0.5})
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3, 4, 5, 5]
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"loss", "done", "val_loss"}  # strings are kept in metrics.jsonl only
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4, 5] and scalars["loss"][1][1] == pytest.approx(0.5)

    # Resumed from a checkpoint at step 3: what the interrupted run wrote past it is dropped, the checkpoint's
    # own step stays, and the new points follow.
    with MetricsLog(tmp_path, resume_step=3) as log:
        for step in (4, 5, 6):
            log.write({"step": step, "loss": 10.0 * step})
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4, 5, 6]
    assert scalars["loss"][3][1] == 40.0  # the resumed run's value, not the dropped one
    assert not scalars.get("val_loss") and [s for s, _ in scalars["done"]] == [1, 2, 3]  # steps past 3 are gone

    # A fresh start replaces the earlier attempt's records and events.
    with MetricsLog(tmp_path) as log:
        log.write({"step": 1, "loss": 3.0})
    assert _steps(tmp_path / "metrics.jsonl") == [1]
    assert tensorboard_scalars(tmp_path / "tensorboard") == {"loss": [(1, 3.0)]}


def test_tags_are_cleaned_and_tensorboard_can_be_off(tmp_path):
    assert tag_of("success/rl/button-press-v3[hand:0.06,0,0]") == "success/rl/button-press-v3_hand_0.06_0_0_"
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.write({"step": 0, "success/rl/a[b:1]": 1.0})
    assert not (tmp_path / "tensorboard").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 0, "success/rl/a[b:1]": 1.0}


def test_wandb_offline_run_holds_the_logged_keys_and_a_resume_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    settings = WandbConfig(enabled=True, mode="offline", tags=("test",), group="demo")
    with MetricsLog(tmp_path / "sft", wandb=settings, run_name="demo/sft", config={"lr": 0.1}) as log:
        log.write({"step": 1, "loss": 2.0, "note": "x"})
        log.write({"step": 2, "loss": 1.0})
        log.write({"step": 2, "val_loss": 1.5})
    run_id = (tmp_path / "sft" / "wandb.id").read_text().strip()
    with MetricsLog(tmp_path / "sft", resume_step=2, wandb=settings) as log:
        log.write({"step": 3, "loss": 0.5})
    runs = wandb_offline_history(tmp_path / "wandb_dir")
    assert set(runs) == {run_id}  # the resumed stage continued the same wandb run
    rows = {row["_step"]: row for row in runs[run_id]}
    assert rows[1]["loss"] == 2.0 and "note" not in rows[1]
    assert rows[2]["loss"] == 1.0 and rows[2]["val_loss"] == 1.5 and rows[3]["loss"] == 0.5


def test_wandb_enabled_but_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    check_wandb(WandbConfig())  # off: never imported
    with pytest.raises(MetricsLogError, match=r"pip install wandb \(or the irevla\[wandb\] extra\)"):
        check_wandb(WandbConfig(enabled=True))
    with pytest.raises(MetricsLogError, match="pip install wandb"):
        MetricsLog(tmp_path, wandb=WandbConfig(enabled=True))
    assert LoggingConfig().wandb.enabled is False and LoggingConfig().tensorboard is True


def test_the_learner_process_can_log_without_loading_torch(tmp_path):
    code = ("import sys; from irevla.learner.process import learner_metrics; "
            "from irevla.metrics_log import LoggingConfig; "
            f"log = learner_metrics({str(tmp_path / 'learner')!r}, LoggingConfig()); "
            "log.write({'step': 1, 'critic_loss': 0.5}); log.close(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert tensorboard_scalars(tmp_path / "learner" / "tensorboard") == {"critic_loss": [(1, 0.5)]}

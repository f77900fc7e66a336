"""The SFT trainer: learns, writes its run directory, resumes exactly, refuses what would silently go wrong."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_factory import IMAGE, tiny_config, write_dataset
from safetensors.torch import load_file

from irevla.config import ConfigError, validate_config
from irevla.policy.checkpoint import load_policy, read_manifest
from irevla.policy.config import SFTConfig
from irevla.policy.sft import batch_indices, learning_rate_factor, masked_mse, run_sft
from irevla.spec import Observation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_metrics_log import tensorboard_scalars, wandb_offline_history  # noqa: E402


def sft_config(data_dir, out, policy=None, **train):
    settings = {"steps": 40, "batch_size": 16, "warmup_steps": 0, "log_every": 10, "eval_every": 20,
                "checkpoint_every": 20, "tensorboard": False, "lr": 1e-3, "head_lr": 1e-3, "val_batches": 2}
    settings.update(train)
    return validate_config({"policy": (policy or tiny_config(training="full")).model_dump(mode="json"),
                            "data": {"dirs": [str(data_dir)], "val_fraction": 0.25}, "out": str(out),
                            "train": settings}, SFTConfig, "<test>")


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _probe(policy, instruction, brightness):
    image = np.full((IMAGE, IMAGE, 3), int(brightness * 255), dtype=np.uint8)
    return policy.act(Observation(images={"front": image}, proprio=np.zeros(4, np.float32),
                                  instruction=instruction)).values


def test_sft_learns_the_rule_and_writes_its_run_directory(dataset_dir, tmp_path):
    out = tmp_path / "run"
    result = run_sft(sft_config(dataset_dir, out, steps=100, log_every=20, eval_every=50, schedule="constant",
                                tensorboard=True), log=None)
    # The split is by a hash of each file name (random names here): count, not composition, is fixed.
    assert result.steps == 100 and result.train_episodes + result.val_episodes == 8 and result.val_episodes >= 1
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.jsonl", "tensorboard", "last", "policy",
                                               "summary.json"}
    scalars = tensorboard_scalars(out / "tensorboard")  # TensorBoard shows the same points as metrics.jsonl
    assert set(scalars) == {"loss", "lr", "head_lr", "grad_norm", "samples_per_s", "elapsed_s", "val_loss"}
    assert [step for step, _ in scalars["loss"]] == [20, 40, 60, 80, 100]
    assert [step for step, _ in scalars["val_loss"]] == [50, 100]
    records = _metrics(out)
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [20, 40, 60, 80, 100]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert [r["step"] for r in records if "val_loss" in r] == [50, 100]
    assert result.val_loss is not None and result.val_loss < 0.2

    policy = load_policy(out / "policy")
    assert read_manifest(out / "policy")["info"]["step"] == 100
    assert json.loads((out / "summary.json").read_text())["checkpoint_id"] == policy.checkpoint_id
    # Language decides the sign of dx, brightness the value of dy (see policy_factory).
    assert _probe(policy, "push left", 0.5)[0] > 0.2 and _probe(policy, "push right", 0.5)[0] < -0.2
    assert _probe(policy, "push left", 0.8)[1] > _probe(policy, "push left", 0.2)[1]


def _weights(policy):
    return {**{f"b.{k}": v for k, v in policy.backbone.state_dict().items()},
            **{f"h.{k}": v for k, v in policy.head.state_dict().items()}}


def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(dataset_dir, tmp_path):
    policy_config = tiny_config("qwen2_vl", training="lora")
    straight = run_sft(sft_config(dataset_dir, tmp_path / "straight", policy_config, steps=8, log_every=2,
                                  eval_every=4, checkpoint_every=4, warmup_steps=3), log=None)
    options = dict(steps=8, log_every=2, eval_every=4, checkpoint_every=4, warmup_steps=3, tensorboard=True)
    first = run_sft(sft_config(dataset_dir, tmp_path / "resumed", policy_config, **options), stop_after=5, log=None)
    assert first.steps == 5 and first.policy_dir == ""  # stopped early: no final policy yet
    assert json.loads((tmp_path / "resumed" / "last" / "trainer.json").read_text())["step"] == 5
    resumed = run_sft(sft_config(dataset_dir, tmp_path / "resumed", policy_config, **options), resume=True,
                      log=None)
    assert resumed.steps == 8
    a, b = _weights(load_policy(straight.policy_dir)), _weights(load_policy(resumed.policy_dir))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    steps = [r["step"] for r in _metrics(tmp_path / "resumed") if "loss" in r]
    assert steps == [2, 4, 5, 6, 8]  # each step once: 5 is where the first run stopped
    scalars = tensorboard_scalars(tmp_path / "resumed" / "tensorboard")  # two event files, one curve
    assert [step for step, _ in scalars["loss"]] == [2, 4, 5, 6, 8]
    assert [step for step, _ in scalars["val_loss"]] == [4, 8]
    optimizer = load_file(str(tmp_path / "resumed" / "last" / "optimizer.safetensors"))
    assert any(name.endswith(".exp_avg") for name in optimizer)


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_an_existing_one(dataset_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_sft(sft_config(dataset_dir, out, steps=2, checkpoint_every=1), log=None)
    with pytest.raises(ConfigError, match="already holds an SFT run; pass --resume"):
        run_sft(sft_config(dataset_dir, out, steps=2), log=None)
    with pytest.raises(ConfigError, match=r"train.lr: the run was started with 0.001, the config now says 0.01"):
        run_sft(sft_config(dataset_dir, out, steps=4, lr=0.01), resume=True, log=None)
    # steps may grow, and the logging may change: here wandb (offline, nothing leaves the machine)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    more = run_sft(sft_config(dataset_dir, out, steps=4, log_every=1, wandb={"enabled": True, "mode": "offline"}),
                   resume=True, log=None)
    assert more.steps == 4
    runs = wandb_offline_history(tmp_path / "wandb")
    assert list(runs) == [(out / "wandb.id").read_text().strip()]
    assert [row["_step"] for row in runs[list(runs)[0]] if "loss" in row] == [3, 4]
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        (tmp_path / "other").mkdir()
        from irevla.config import dump_config

        dump_config(sft_config(dataset_dir, tmp_path / "other"), tmp_path / "other" / "config.yaml")
        run_sft(sft_config(dataset_dir, tmp_path / "other"), resume=True, log=None)


def test_stage_two_starts_from_a_checkpoint_and_keeps_its_normalisation(dataset_dir, tmp_path):
    first = run_sft(sft_config(dataset_dir, tmp_path / "stage0", tiny_config(training="frozen"), steps=2), log=None)
    extra = write_dataset(tmp_path / "rl", episodes_per_task=2, tasks=("push-right",), prefix="rl-")
    config = sft_config(dataset_dir, tmp_path / "stage2", tiny_config(training="lora"), steps=3)
    config = config.model_copy(update={"init": first.policy_dir,
                                       "data": config.data.model_copy(update={"dirs": (str(dataset_dir),
                                                                                       str(extra))})})
    result = run_sft(config, log=None)
    before, after = load_policy(first.policy_dir), load_policy(result.policy_dir)
    assert after.stats == before.stats  # the normaliser does not move between rounds
    assert after.lora_layers and not before.lora_layers
    assert result.train_episodes + result.val_episodes == 10  # D_e (8) + D_RL (2)
    assert read_manifest(result.policy_dir)["info"]["train_episodes"] == result.train_episodes


def test_data_problems_are_reported_as_config_errors(tmp_path, dataset_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.dirs: no episodes"):
        run_sft(sft_config(tmp_path / "empty", tmp_path / "out"), log=None)
    with pytest.raises(FileNotFoundError, match="episode directory does not exist"):
        run_sft(sft_config(tmp_path / "missing", tmp_path / "out2"), log=None)


def test_batches_cover_every_sample_once_per_epoch_whatever_the_batch_size():
    n = 10
    stream = [i for step in range(5) for i in batch_indices(step, 4, n, seed=3)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert batch_indices(2, 4, n, seed=3) == batch_indices(2, 4, n, seed=3)
    assert batch_indices(0, 4, n, seed=3) != batch_indices(0, 4, n, seed=4)


def test_schedule_and_loss_helpers():
    assert learning_rate_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert learning_rate_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert learning_rate_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert learning_rate_factor(50, 100, 0, "constant") == 1.0
    predicted, target = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    target[0, 2] = 100.0  # a padded chunk step: must not count
    assert float(masked_mse(predicted, target, torch.tensor([[True, True, False]]))) == pytest.approx(1.0)


def test_optimizer_state_of_other_parameters_is_refused(tmp_path):
    from irevla.policy.errors import CheckpointError
    from irevla.policy.trainer_state import load_optimizer_state, optimizer_state_to_files

    weights = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.AdamW([{"params": weights[:1]}, {"params": weights[1:]}])
    weights[0].grad, weights[1].grad = torch.ones(2), torch.ones(3)
    optimizer.step()
    saved = optimizer_state_to_files(optimizer, [["a"], ["b"]], tmp_path)
    fresh = torch.optim.AdamW([{"params": weights[:1]}, {"params": weights[1:]}])
    load_optimizer_state(fresh, [["a"], ["b"]], tmp_path, saved)
    torch.testing.assert_close(fresh.state[weights[1]]["exp_avg"], optimizer.state[weights[1]]["exp_avg"])
    with pytest.raises(CheckpointError,
                       match=r"optimizer group 1: trainable parameters differ from the saved run at position 0 "
                             r"\(expected \['b'\]"):
        load_optimizer_state(fresh, [["a"], ["c"]], tmp_path, saved)
    with pytest.raises(CheckpointError, match="expected 2 optimizer groups, the model has 1"):
        load_optimizer_state(fresh, [["a"]], tmp_path, saved)

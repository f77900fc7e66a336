"""The loop config carries its stages' settings as typed models: a misspelt key or a wrong type in a stage's settings
fails when the config loads, naming the key; the effective SFT settings of config/demo.yaml's stages are pinned to
what the loop ran with before they were composed by type (captured from that code's output)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from irevla.config import ConfigError, parse_overrides
from irevla.iterate.config import load_iterate_config
from irevla.policy.config import SFTConfig

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.yaml"

# config/demo.yaml + config/sft.yaml, stage 0 (run_dir runs/demo), as the dotted-string patching produced it.
DEMO_STAGE0 = {
    "data": {"cache": True, "cameras": None, "dirs": ["runs/demo/expert"], "expert_fraction": None, "num_workers": 0,
             "split_seed": 0, "success_only": True, "tasks": None, "val_fraction": 0.1},
    "init": None,
    "out": "runs/demo/sft",
    "policy": {"action_normalization": "bounds",
               "backbone": {"attention": "sdpa", "dtype": "float32", "heads": 4, "hidden_size": 128, "image_size": 64, "kind": "qwen2_vl",
                            "layers": 2, "max_text_tokens": 32, "num_query_tokens": 8, "patch_size": 8,
                            "preset": None, "pretrained": None, "prompt": "{instruction}", "vision_hidden_size": 64,
                            "vision_layers": 2},
               "backbone_training": "full",
               "head": {"action_chunk": 1, "attention_heads": 4, "hidden": [256, 256], "layer_norm": True,
                        "pool_queries": 1, "token_dim": 128, "use_proprio": True},
               "lora": {"alpha": 16.0, "dropout": 0.0, "r": 8, "targets": "language"}},
    "train": {"batch_size": 32, "checkpoint_every": 200, "eval_every": 400, "grad_accumulation": 1, "grad_clip": 1.0,
              "gradient_checkpointing": False,
              "head_lr": 0.0001, "huber_delta": 1.0, "jitter_brightness": 0.0, "jitter_contrast": 0.0,
              "jitter_saturation": 0.0, "log_every": 50, "loss": "mse", "lr": 0.0001, "mixed_precision": "no",
              "schedule": "cosine", "seed": 0, "shift_pixels": 0, "steps": 1200, "tensorboard": True,
              "threads": 2,  # sft_threads: 2 since issue 19 (it was the loop's threads: 1)
              "val_batches": 20, "warmup_steps": 50, "weight_decay": 0.01,
              # the loop sets train.wandb from its logging.wandb (off by default: wandb's defaults)
              "wandb": {"dir": None, "enabled": False, "entity": None, "group": None, "mode": None, "name": None,
                        "project": "irevla", "tags": []}},
}
# Stage 2 after RL task 1 differs from stage 0 in exactly these keys.
DEMO_STAGE2_CHANGES = {
    ("data", "dirs"): ["runs/demo/expert", "runs/demo/d_rl"], ("data", "expert_fraction"): 0.6,
    ("init",): "runs/demo/rl-1/policy", ("out",): "runs/demo/stage2-1",
    ("policy", "backbone_training"): "lora", ("train", "steps"): 400, ("train", "warmup_steps"): 0,
}


@pytest.fixture(autouse=True)
def _in_the_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # sft_config: config/sft.yaml is relative to where the loop runs


def _write(tmp_path: Path, changes: dict) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    data.update(changes)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_stage_settings_are_what_they_were():
    config = load_iterate_config(DEMO)
    stage0 = config.stage0_sft()
    assert isinstance(stage0, SFTConfig)
    assert stage0.model_dump(mode="json") == DEMO_STAGE0
    expected = yaml.safe_load(yaml.safe_dump(DEMO_STAGE0))
    for path, value in DEMO_STAGE2_CHANGES.items():
        node = expected
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    assert config.stage2_sft(1, "runs/demo/rl-1/policy").model_dump(mode="json") == expected
    # The exact types matter too: a resumed SFT run compares its whole config with the one it started with.
    assert type(stage0.train.lr) is float and stage0.data.dirs == ("runs/demo/expert",)


def test_demo_learner_and_eval_settings_are_typed():
    from irevla.iterate.config import EvalConfig
    from irevla.learner.config import LearnerConfig

    config = load_iterate_config(DEMO)
    assert isinstance(config.rl.learner, LearnerConfig) and isinstance(config.eval, EvalConfig)
    assert (config.rl.learner.sac.num_critics, config.rl.learner.sac.critic_hidden) == (4, (128, 128))
    assert (config.eval.episodes, config.eval.parallel_envs, config.eval.workers) == (30, 5, "auto")
    assert (config.threads, config.sft_threads, config.stage0_sft().train.threads) == (1, 2, 2)


@pytest.mark.parametrize("changes, message", [
    ({"sft_overrides": {"trainnig": {"steps": 3}}}, r"run.yaml: sft_overrides.trainnig: unknown key"),
    ({"sft_overrides": {"train.stepz": 3}}, r"run.yaml: sft_overrides.train.stepz: unknown key"),
    ({"sft_overrides": {"train": {"lr": "abc"}}}, r"run.yaml: sft_overrides.train.lr: Input should be a valid number"),
    ({"stage2": {"overrides": {"data.expert_fracion": 0.5}}}, r"run.yaml: stage2.overrides.data.expert_fracion: unknown"),
    ({"stage2": {"overrides": {"policy": {"lora": {"r": 0}}}}},
     r"run.yaml: stage2.overrides.policy.lora.r: Input should be greater than or equal to 1"),
    ({"stage2": {"overrides": {"out": "elsewhere"}}}, r"run.yaml: stage2.overrides.out: the loop sets it"),
    ({"sft_overrides": {"data.dirs": ["x"]}}, r"run.yaml: sft_overrides.data.dirs: the loop sets it"),
    ({"sft_overrides": {"train.steps": 3, "train": {"steps": 4}}}, r"sft_overrides: train.steps: given twice"),
    ({"rl": {"learner": {"sac": {"num_critics": 2, "critic_subsample": 3}}}},
     r"run.yaml: rl.learner: sac: critic_subsample 3 > num_critics 2"),
    ({"rl": {"learner": {"sac": {"discont": 0.9}}}}, r"run.yaml: rl.learner.sac.discont: unknown key"),
    ({"rl": {"ppo": {"clip": "wide"}}}, r"run.yaml: rl.ppo: clip: Input should be a valid number"),
    ({"eval": {"episodse": 3}}, r"run.yaml: eval.episodse: unknown key"),
    ({"eval": {"workers": 0}}, r"run.yaml: eval.workers: expected 'auto' or an integer >= 1 \(got 0\)"),
    ({"eval": {"workers": "all"}}, r"run.yaml: eval.workers: expected 'auto' or an integer >= 1 \(got 'all'\)"),
    ({"eval": {"workers": 2.5}}, r"run.yaml: eval.workers: expected 'auto' or an integer >= 1 \(got 2.5\)"),
])
def test_a_typo_in_a_stage_fails_at_load_naming_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_iterate_config(_write(tmp_path, changes))


def test_set_overrides_are_typed_too():
    with pytest.raises(ConfigError, match=r"demo.yaml: sft_overrides.train.lr: Input should be a valid number "
                                          r"\(got 'abc'\)"):
        load_iterate_config(DEMO, parse_overrides(["sft_overrides.train.lr=abc"]))
    with pytest.raises(ConfigError, match=r"demo.yaml: sft: unknown key"):
        load_iterate_config(DEMO, parse_overrides(["sft.optim.lr=1.0e-4"]))
    # A --set of a key the file spells with dots replaces that key (no two spellings left behind).
    config = load_iterate_config(DEMO, parse_overrides(["sft_overrides.train.steps=7", "stage2.overrides.train.lr=2.0e-4"]))
    assert config.stage0_sft().train.steps == 7 and config.stage0_sft().train.lr == 1e-4
    stage2 = config.stage2_sft(1, "p")
    assert (stage2.train.steps, stage2.train.lr, stage2.data.expert_fraction) == (400, 2e-4, 0.6)


def test_settings_that_only_fail_together_fail_at_load_naming_the_stage(tmp_path):
    path = _write(tmp_path, {"stage2": {"steps": 10, "overrides": {"train.grad_accumulation": 5}}})
    with pytest.raises(ConfigError, match=r"run.yaml: stage 2's SFT settings \(config/sft.yaml \+ sft_overrides \+ "
                                          r"stage2.overrides\): train: batch_size 32 must be a multiple of "
                                          r"grad_accumulation 5"):
        load_iterate_config(path)
    with pytest.raises(ConfigError, match=r"sft.yaml: config file not found"):
        load_iterate_config(_write(tmp_path, {"sft_config": "config/nope/sft.yaml"}))


def test_overrides_merge_key_by_key_and_the_run_record_holds_only_what_was_given(tmp_path):
    from irevla.iterate.loop import _dump

    path = _write(tmp_path, {"sft_overrides": {"train.steps": 5, "policy": {"lora": {"r": 4}}}})
    config = load_iterate_config(path)
    stage0 = config.stage0_sft()
    assert stage0.policy.lora.r == 4 and stage0.policy.lora.alpha == 16.0  # the file's other lora keys stay
    record = yaml.safe_load(_dump(config))
    assert record["sft_overrides"] == {"policy": {"lora": {"r": 4}}, "train": {"steps": 5}}
    assert record["stage2"]["overrides"] == {"data": {"expert_fraction": 0.6}}
    assert load_iterate_config(path) == config


def test_stage2_in_this_process_writes_no_yaml_for_itself(tmp_path, monkeypatch):
    """In-process stage 2 hands run_sft the typed settings; stage2.yaml is written only for a dispatched command."""
    import irevla.policy.sft as sft_module
    from irevla.iterate import loop

    config = load_iterate_config(DEMO, {"run_dir": str(tmp_path / "run")})
    received = []

    class _Result:
        val_loss = 0.5

    monkeypatch.setattr(sft_module, "run_sft",
                        lambda sft, resume, log, progress=None: received.append(sft) or _Result())
    outputs = loop.stage_stage2(config, tmp_path / "run", 1, "runs/x/policy", log=lambda message: None)
    assert received == [config.stage2_sft(1, "runs/x/policy", tmp_path / "run")]
    assert outputs["backbone_training"] == "lora" and not (tmp_path / "run" / "stage2-1" / "stage2.yaml").exists()


def test_the_iterate_command_stops_on_a_bad_set_before_anything_runs(tmp_path, capsys):
    from irevla.cli import main

    run_dir = tmp_path / "run"
    assert main(["iterate", "--config", str(DEMO), "--run-dir", str(run_dir),
                 "--set", "sft_overrides.train.lr=abc"]) == 2
    assert "sft_overrides.train.lr: Input should be a valid number" in capsys.readouterr().err
    assert main(["iterate", "--config", str(DEMO), "--run-dir", str(run_dir), "--set", "rl.max_env_steps"]) == 2
    assert "--set 'rl.max_env_steps': expected KEY=VALUE" in capsys.readouterr().err
    assert not run_dir.exists()


def test_stage2_without_d_rl_training_episodes_drops_the_weighted_draw(tmp_path):
    """Stage 1 that found no success leaves D_RL empty: stage 2 then trains on D_e alone (the weighted draw needs both
    sides) and says so, instead of stopping an overnight run; with D_RL episodes the weighting is kept."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "policy"))
    from policy_factory import write_dataset

    from irevla.iterate.loop import _without_empty_d_rl_weighting

    write_dataset(tmp_path / "expert", episodes_per_task=3)
    (tmp_path / "d_rl").mkdir()
    sft = SFTConfig.model_validate({"data": {"dirs": [str(tmp_path / "expert"), str(tmp_path / "d_rl")],
                                             "expert_fraction": 0.6}, "out": str(tmp_path / "out")})
    dropped, note = _without_empty_d_rl_weighting(sft)
    assert dropped.data.expert_fraction is None and "no training episode" in note and "d_rl" in note
    write_dataset(tmp_path / "d_rl", episodes_per_task=4)
    kept, note = _without_empty_d_rl_weighting(sft)
    assert kept.data.expert_fraction == 0.6 and note is None


def test_demos_are_recorded_in_the_runs_family():
    from irevla.config import validate_config
    from irevla.iterate.config import IterateConfig

    with pytest.raises(ConfigError, match="demos.family: the run is family 'kitchen'.*set demos.family: kitchen"):
        validate_config({"family": "kitchen", "demos": {"tasks": ["light-on"], "episodes": 1},
                         "rl_tasks": [{"task": "light-on"}]}, IterateConfig)

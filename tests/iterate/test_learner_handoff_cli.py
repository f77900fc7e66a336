"""`irevla learner init` and `irevla learner export`: stage 1 by hand (the robot), through the real CLI entry.

Real tiny policy checkpoints, real HDF5 episode stores, real safetensors files. `init` must write what the learner
process loads (with the learner's own loaders) and exactly what `irevla iterate` writes for the same settings;
`export` must put the learner's head into a new checkpoint and leave the backbone alone. Errors exit 2, name the
file, and leave nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("jax")

from policy_factory import make_episode, make_task, tiny_policy, write_dataset  # noqa: E402

from irevla.cli import main  # noqa: E402
from irevla.data.store import EpisodeCollection, EpisodeStore  # noqa: E402
from irevla.policy.checkpoint import load_policy, read_manifest, save_head, save_policy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
INIT_NAMES = ["demo.safetensors", "done", "head.safetensors", "learner.yaml", "spec.json"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny policy checkpoint; D_e with 2 successful episodes of each of two tasks; a store with a failure."""
    root = tmp_path_factory.mktemp("handoff")
    save_policy(tiny_policy(), root / "ckpt")
    write_dataset(root / "demos", episodes_per_task=2)
    failed = EpisodeStore(root / "failed")
    path = failed.write(dataclasses.replace(make_episode(7, make_task("push-left")), success=False))
    path.rename(path.with_name("ep-failed.h5"))
    return root


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["learner", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name or ".old" in p.name)


# --------------------------------------------------------------------------------------------------------- init
def test_init_writes_what_the_learner_loads(base, tmp_path, capsys):
    from irevla.config import validate_config
    from irevla.head_file import load_head_arrays
    from irevla.learner.config import LearnerConfig
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.replay import LatentReplay

    settings = tmp_path / "learner.yaml"
    settings.write_text(yaml.safe_dump({"learner": {"demo_capacity": 300, "sac": {"num_critics": 3}}}))
    out = tmp_path / "learner_init"
    code, text = _run(capsys, "init", "--policy", base / "ckpt", "--out", out, "--demos", base / "demos",
                      base / "failed", "--task", "push-left", "--config", settings)
    assert code == 0, text
    assert "2 successful episodes (24 transitions)" in text
    assert sorted(p.name for p in out.iterdir()) == INIT_NAMES
    assert _leftovers(tmp_path) == []

    # The same loaders `irevla learner serve` uses.
    policy = load_policy(base / "ckpt")
    spec = HeadSpec.from_dict(json.loads((out / "spec.json").read_text()))
    assert spec == HeadSpec.from_policy(policy, latent="pooled")
    state, metadata = load_head_arrays(out / "head.safetensors")
    assert metadata == {"latent": "pooled"}
    expected = policy.head_state()
    assert sorted(state) == sorted(expected)
    for name, array in state.items():
        np.testing.assert_array_equal(array, expected[name].numpy())
    written = yaml.safe_load((out / "learner.yaml").read_text())
    assert written["algorithm"] == "sac" and written["ppo"] == {}
    config = validate_config(written["learner"], LearnerConfig, "learner.yaml")
    assert config.demo_capacity == 300 and config.sac.num_critics == 3
    assert config.sac.discount == LearnerConfig().sac.discount  # the rest: defaults

    demo = LatentReplay.load(out / "demo.safetensors", capacity=config.demo_capacity)
    assert len(demo) == 24 and demo.episodes_started == 2  # 2 successful push-left episodes x 12 steps
    assert demo.latent_shape == spec.latent_shape and not demo.with_mask
    assert int(demo.terminal.sum()) == 2 and float(demo.reward.sum()) == 2.0  # success ends each one
    first = next(EpisodeCollection(base / "demos").episodes(task="push-left"))
    np.testing.assert_array_equal(demo.action[:12], spec.action_to_unit(first.actions))
    np.testing.assert_array_equal(demo.proprio[:13], first.proprio)


def test_init_writes_exactly_what_the_loop_writes(base, tmp_path, capsys):
    from irevla.iterate.config import IterateConfig
    from irevla.iterate.loop import _write_learner_init

    rl = {"latent": "tokens", "learner": {"demo_capacity": 300, "sac": {"discount": 0.99}}}
    config = IterateConfig(run_dir=str(tmp_path / "run"), init=str(base / "ckpt"),
                           expert_data=(str(base / "demos"), str(base / "failed")),
                           expert_tasks=[{"task": "push-left"}], rl_tasks=[{"task": "push-left"}], rl=rl)
    stage = tmp_path / "run" / "rl-1"
    stage.mkdir(parents=True)
    _write_learner_init(stage, config, load_policy(base / "ckpt"), config.rl_tasks[0], tmp_path / "run",
                        log=lambda _: None)
    settings = tmp_path / "learner.yaml"
    settings.write_text(yaml.safe_dump({"learner": rl["learner"]}))
    out = tmp_path / "learner_init"
    code, text = _run(capsys, "init", "--policy", base / "ckpt", "--out", out, "--latent", "tokens", "--config",
                      settings, "--demos", base / "demos", base / "failed", "--task", "push-left")
    assert code == 0, text
    for name in INIT_NAMES:
        assert (out / name).read_bytes() == (stage / "learner_init" / name).read_bytes(), name


def test_loop_from_init_without_expert_data_starts_with_an_empty_demo_buffer(base, tmp_path):
    """A run that starts from a checkpoint (init) with no D_e: stage 1's demo buffer is the VLA's own rollouts."""
    from irevla.iterate.config import IterateConfig
    from irevla.iterate.loop import _write_learner_init
    from irevla.learner.replay import LatentReplay

    config = IterateConfig(run_dir=str(tmp_path / "run"), init=str(base / "ckpt"),
                           expert_tasks=[{"task": "push-left"}], rl_tasks=[{"task": "push-left"}])
    assert config.rl.expert_demos  # the default: it must not ask for D_e that the run does not have
    stage = tmp_path / "run" / "rl-1"
    stage.mkdir(parents=True)
    _write_learner_init(stage, config, load_policy(base / "ckpt"), config.rl_tasks[0], tmp_path / "run",
                        log=lambda _: None)
    assert sorted(p.name for p in (stage / "learner_init").iterdir()) == INIT_NAMES
    assert len(LatentReplay.load(stage / "learner_init" / "demo.safetensors", capacity=100)) == 0


def test_init_refuses_to_replace_a_complete_directory_without_force(base, tmp_path, capsys):
    out = tmp_path / "learner_init"
    assert _run(capsys, "init", "--policy", base / "ckpt", "--out", out)[0] == 0  # no demos: an empty buffer
    before = {name: (out / name).stat().st_mtime_ns for name in INIT_NAMES}
    code, text = _run(capsys, "init", "--policy", base / "ckpt", "--out", out, "--latent", "tokens")
    assert code == 2 and str(out) in text and "--force" in text
    assert {name: (out / name).stat().st_mtime_ns for name in INIT_NAMES} == before
    code, text = _run(capsys, "init", "--policy", base / "ckpt", "--out", out, "--latent", "tokens", "--force")
    assert code == 0, text
    assert json.loads((out / "spec.json").read_text())["latent"] == "tokens"
    assert _leftovers(tmp_path) == []

    # Something that is not a learner_init is never replaced, --force or not.
    other = tmp_path / "run"
    other.mkdir()
    (other / "state.json").write_text("{}")
    code, text = _run(capsys, "init", "--policy", base / "ckpt", "--out", other, "--force")
    assert code == 2 and "state.json" in text and str(other) in text
    assert sorted(p.name for p in other.iterdir()) == ["state.json"]


def test_init_errors_name_the_path_and_write_nothing(base, tmp_path, capsys):
    out = tmp_path / "learner_init"

    def refused(*argv, expect: list[str]) -> None:
        code, text = _run(capsys, "init", "--out", out, *argv)
        assert code == 2, text
        for part in expect:
            assert part in text, (part, text)
        assert not out.exists() and _leftovers(tmp_path) == []

    missing = tmp_path / "no-such-checkpoint"
    refused("--policy", missing, expect=[str(missing), "not found"])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(base / "ckpt", corrupt)
    head = bytearray((corrupt / "head.safetensors").read_bytes())
    head[-1] ^= 0xFF
    (corrupt / "head.safetensors").write_bytes(bytes(head))
    refused("--policy", corrupt, expect=[str(corrupt / "head.safetensors"), "hash"])
    refused("--policy", base / "ckpt", "--demos", base / "failed", expect=[str(base / "failed"),
                                                                          "no successful episodes"])
    refused("--policy", base / "ckpt", "--demos", base / "demos", "--task", "pick-cube",
            expect=["no successful episodes of task 'pick-cube'", "synthetic/push-left", str(base / "demos")])
    refused("--policy", base / "ckpt", "--demos", tmp_path / "nowhere", expect=[str(tmp_path / "nowhere")])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"learner": {"sac": {"discount": 2.0}}}))
    refused("--policy", base / "ckpt", "--config", bad, expect=[str(bad), "learner.sac.discount"])
    bad.write_text(yaml.safe_dump({"max_env_steps": 100}))
    refused("--policy", base / "ckpt", "--config", bad, expect=[str(bad), "max_env_steps"])
    bad.write_text(yaml.safe_dump({"algorithm": "dqn"}))  # the registry's error lists the known algorithms
    refused("--policy", base / "ckpt", "--config", bad, expect=[str(bad), "unknown algorithm 'dqn'", "sac", "ppo"])
    bad.write_text(yaml.safe_dump({"algorithm": "ppo", "ppo": {"epochs": 0}}))
    refused("--policy", base / "ckpt", "--config", bad, expect=[str(bad), "ppo", "epochs"])
    with pytest.raises(SystemExit) as exit_info:
        main(["learner", "init", "--policy", str(base / "ckpt"), "--out", str(out), "--latent", "pixels"])
    assert exit_info.value.code == 2 and "invalid choice: 'pixels'" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------- export
def _learner_head(base: Path, path: Path, shift: float = 0.1) -> dict[str, torch.Tensor]:
    """A head file as a pooled-latent learner writes it: the mlp.* tensors only, trained (here: shifted)."""
    state = load_policy(base / "ckpt").head_state()
    trained = {name: tensor + shift for name, tensor in state.items() if name.startswith("mlp.")}
    save_head(path, trained, {"updates": 7, "episodes": 3, "latent": "pooled"})
    return trained


def test_export_puts_the_learners_head_into_a_new_checkpoint(base, tmp_path):
    head_file = tmp_path / "learner" / "head.safetensors"
    trained = _learner_head(base, head_file)
    out = tmp_path / "rl-policy"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run([sys.executable, "-m", "irevla", "learner", "export", "--policy", str(base / "ckpt"),
                                "--head", str(head_file), "--out", str(out), "--threads", "1"],
                               capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"{len(trained)} of 31 head tensors changed; learner updates: 7" in completed.stdout

    source, exported = load_policy(base / "ckpt"), load_policy(out)
    original, head = source.head_state(), exported.head_state()
    assert sorted(head) == sorted(original)
    for name, tensor in head.items():
        assert torch.equal(tensor, trained[name] if name in trained else original[name]), name
    backbone, original_backbone = exported.backbone.model.state_dict(), source.backbone.model.state_dict()
    assert sorted(backbone) == sorted(original_backbone)
    for name, tensor in backbone.items():
        assert torch.equal(tensor, original_backbone[name]), name
    manifest, source_manifest = read_manifest(out), read_manifest(base / "ckpt")
    assert manifest["files"]["backbone.safetensors"] == source_manifest["files"]["backbone.safetensors"]
    assert manifest["files"]["stats.json"] == source_manifest["files"]["stats.json"]
    assert manifest["info"]["policy_checkpoint_id"] == source_manifest["checkpoint_id"]
    assert manifest["info"]["head_metadata"]["updates"] == 7
    assert manifest["checkpoint_id"] != source_manifest["checkpoint_id"]


def test_export_errors_name_the_file_and_the_tensor_and_write_nothing(base, tmp_path, capsys):
    out = tmp_path / "rl-policy"

    def refused(head: Path, *extra, expect: list[str]) -> None:
        code, text = _run(capsys, "export", "--policy", base / "ckpt", "--head", head, "--out", out, *extra)
        assert code == 2, text
        for part in expect:
            assert part in text, (part, text)
        assert not out.exists() and _leftovers(tmp_path) == []

    state = load_policy(base / "ckpt").head_state()
    wrong_shape = tmp_path / "wrong_shape.safetensors"
    save_head(wrong_shape, {**state, "mlp.out.weight": torch.zeros(7, 64)})
    refused(wrong_shape, expect=[str(wrong_shape), "'mlp.out.weight'", "(4, 64)", "(7, 64)"])
    wrong_name = tmp_path / "wrong_name.safetensors"
    save_head(wrong_name, {"mlp.out.weight": state["mlp.out.weight"], "critic.q.weight": torch.zeros(1, 64)})
    refused(wrong_name, expect=[str(wrong_name), "critic.q.weight"])
    refused(tmp_path / "missing.safetensors", expect=[str(tmp_path / "missing.safetensors"), "not found"])
    not_a_head = tmp_path / "junk.safetensors"
    not_a_head.write_bytes(b"not safetensors")
    refused(not_a_head, expect=[str(not_a_head)])

    head_file = tmp_path / "head.safetensors"
    _learner_head(base, head_file)
    code, text = _run(capsys, "export", "--policy", base / "ckpt", "--head", head_file, "--out", base / "ckpt")
    assert code == 2 and "--policy checkpoint itself" in text
    assert _run(capsys, "export", "--policy", base / "ckpt", "--head", head_file, "--out", out)[0] == 0
    first_id = read_manifest(out)["checkpoint_id"]
    code, text = _run(capsys, "export", "--policy", base / "ckpt", "--head", head_file, "--out", out)
    assert code == 2 and "--force" in text and str(out) in text
    _learner_head(base, head_file, shift=0.2)
    code, text = _run(capsys, "export", "--policy", base / "ckpt", "--head", head_file, "--out", out, "--force")
    assert code == 0, text
    assert read_manifest(out)["checkpoint_id"] != first_id
    assert _leftovers(tmp_path) == []

"""The layer rules (docs/architecture.md) hold: import-linter checks the contracts in .importlinter, and the modules
that must stay light really load what they may and nothing more when a fresh interpreter imports them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: the dev extra installs import-linter (make test does)")
    return subprocess.run([str(LINT_IMPORTS), "--config", str(cwd / ".importlinter"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def test_every_layer_contract_is_kept():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout and "0 broken" in out.stdout


def test_a_learner_that_imports_torch_breaks_the_contracts(tmp_path):
    """The check bites: a copy of the package whose learner imports torch (lazily, inside a function, as the
    violations that slip in usually do) fails lint-imports, naming the contract."""
    shutil.copytree(REPO / "irevla", tmp_path / "irevla", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    sac = tmp_path / "irevla" / "learner" / "sac.py"
    sac.write_text(sac.read_text() + "\n\ndef _sneaky():\n    import torch  # noqa: F401\n")
    import os

    out = _lint(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode != 0, out.stdout
    assert "irevla.learner is not allowed to import torch" in out.stdout


LIGHT_MODULES = {
    # the torch-side actors: the simulated loop's and the robot's (vla_policy in rl_actor mode) never load JAX
    "irevla.iterate.actor": ("jax", "flax", "optax", "rclpy"),
    "irevla.policy.latent_actor": ("jax", "flax", "optax", "rclpy"),
    "irevla.robot.nodes.vla_policy": ("jax", "flax", "optax"),
    "irevla.robot.policy_runner": ("jax", "flax", "optax"),
    # the transport: numpy + pyzmq only
    "irevla.transport": ("torch", "jax", "flax", "rclpy"),
    "irevla.transport.messages": ("torch", "jax", "flax", "rclpy"),
    # the learner process never loads torch
    "irevla.learner.cli": ("torch", "transformers", "rclpy"),
    "irevla.learner.sac": ("torch", "transformers", "rclpy"),
    "irevla.learner.ppo": ("torch", "transformers", "rclpy"),
    # the CLI parses arguments before anything heavy loads
    "irevla.cli": ("torch", "jax", "rclpy", "mujoco"),
}


@pytest.mark.parametrize("module", sorted(LIGHT_MODULES))
def test_a_fresh_import_loads_nothing_it_must_not(module):
    forbidden = LIGHT_MODULES[module]
    use = ".build_parser()" if module == "irevla.cli" else ""  # the CLI: building every subcommand's parser too
    code = (f"import sys, importlib; importlib.import_module({module!r}){use}; "
            f"print(sorted(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing {module} loaded {out.stdout.strip()}"

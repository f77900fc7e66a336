"""The RL tasks' envs succeed after a few steps: a stand-in for a policy that has learnt them, for loop tests.

A policy trained for 20 SFT steps on a handful of demos almost never succeeds, so without this a tiny-budget loop
test would see an empty D_RL and could not check what the loop does with it (round metadata, D_RL growing from one
RL task to the next, stage 2 training on it). `patch_rl_envs` makes `irevla.iterate.envs.make_task_env` wrap the env
of every task in ``rl_tasks`` in `SucceedsAfter`: stage 1's episodes and the final rollouts (a simulated run's
evaluation builds its envs in `irevla.policy.rollout`, so every group is evaluated on the simulator's own success).
Everything else -- rendering, recording, the learner process, SFT, evaluation -- is the real loop's.

In a subprocess: ``python -c "$(succeeding_envs.cli_shim(5))" iterate --config ...`` runs `irevla.cli.main` (what
``python -m irevla`` runs) with the patch applied first.
"""

from __future__ import annotations

from pathlib import Path


class SucceedsAfter:
    """A contract env whose episode succeeds (``info["success"]``, reward 1, terminated) after `steps` steps, or
    earlier when the simulator says so."""

    def __init__(self, env, steps: int) -> None:
        self.env, self.steps, self._elapsed = env, steps, 0

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def reset(self, **kwargs):
        self._elapsed = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._elapsed += 1
        if self._elapsed >= self.steps and not info.get("success", False):
            info, reward, terminated = {**info, "success": True}, 1.0, True
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()


def patch_rl_envs(steps: int, monkeypatch=None) -> None:
    """Wrap the RL tasks' envs in `SucceedsAfter` (with pytest's `monkeypatch` when given, else for good)."""
    import irevla.iterate.envs as envs

    real = envs.make_task_env

    def make_task_env(config, ref, **kwargs):
        env = real(config, ref, **kwargs)
        return SucceedsAfter(env, steps) if ref in config.rl_tasks else env

    if monkeypatch is not None:
        monkeypatch.setattr(envs, "make_task_env", make_task_env)
    else:
        envs.make_task_env = make_task_env


def cli_shim(steps: int) -> str:
    """Python source for ``python -c``: patch the RL tasks' envs, then run the irevla CLI on the remaining args."""
    here = str(Path(__file__).resolve().parent)
    return (f"import sys; sys.path.insert(0, {here!r}); import succeeding_envs; "
            f"succeeding_envs.patch_rl_envs({int(steps)}); from irevla.cli import main; sys.exit(main(sys.argv[1:]))")

"""The unattended cycle inside the real loop (`irevla iterate`, stage 1 in Meta-World, the learner in its own
process): a reset hook that hangs and then fails pauses the run, which stops with the reason after its attempts;
once the hook is fixed, the same command resumes and finishes with nothing lost, and the morning report tells the
story (pause, stop, resume)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward"))
from success_factory import save_tiny_policy  # noqa: E402

from irevla.config import validate_config  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.iterate.config import IterateConfig  # noqa: E402
from irevla.iterate.cycle import CycleStopped  # noqa: E402
from irevla.iterate.loop import run_iterate  # noqa: E402

pytest.importorskip("jax")
pytest.importorskip("metaworld")


@pytest.mark.slow
def test_a_broken_reset_hook_pauses_stops_and_the_rerun_resumes(tmp_path):
    policy = save_tiny_policy(tmp_path / "policy", camera="corner2")
    # The reset hook: the first two resets work, the third hangs (killed after its timeout), then it fails with a
    # message until the scene is fixed.
    hook = tmp_path / "reset_scene.sh"
    hook.write_text(f"""n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {tmp_path}/calls
[ -f {tmp_path}/fixed ] && exit 0
[ $n -le 2 ] && exit 0
[ $n -eq 3 ] && sleep 60
echo "the cube is not back in its tray" >&2
exit 3
""")
    run_dir = tmp_path / "run"
    config = validate_config({
        "run_dir": str(run_dir), "family": "metaworld", "init": str(policy), "expert_tasks": [],
        "rl_tasks": [{"task": "button-press-v3"}], "stage2": {"skip": True},
        "rl": {"demo_rollouts": 1, "demo_rollout_attempts": 1, "expert_demos": False, "max_env_steps": 60,
               "max_episode_steps": 10, "final_rollouts": 1,
               "cycle": {"reset_hook": f"sh {hook}", "reset_hook_timeout_s": 1.0, "retry_every_s": 0.2,
                         "max_resets_failed_in_a_row": 3},
               "learner": {"warmup_transitions": 10, "publish_every": 2, "snapshot_every_s": 5.0,
                           "sac": {"num_critics": 2, "batch_size": 8}}},
        "eval": {"episodes": 1, "max_episode_steps": 10}}, IterateConfig)
    lines: list[str] = []
    progress = run_dir / "rl-1" / "actor.json"
    with pytest.raises(CycleStopped, match=r"rl-1: stopped at episode 2, 3 attempts failed in a row: reset_hook"):
        run_iterate(config, log=lines.append)
    assert any("PAUSED at episode 2 (hook_timeout" in line for line in lines), lines
    pause = json.loads((run_dir / "rl-1" / "pause.json").read_text())
    assert pause["stopped"] and "the cube is not back in its tray" in pause["reason"]
    assert json.loads(progress.read_text())["episodes"] == 2  # the two finished episodes are kept
    kept = {p.name for p in (run_dir / "d_rl").glob("*.h5")}

    # The scene is fixed; the same command resumes at episode 2 and finishes.
    (tmp_path / "fixed").touch()
    state = run_iterate(config, log=lines.append)
    assert "eval-1" in state.finished and not (run_dir / "rl-1" / "pause.json").exists()
    assert kept <= {p.name for p in (run_dir / "d_rl").glob("*.h5")}
    history = json.loads(progress.read_text())["history"]
    assert [h["episode"] for h in history] == list(range(len(history))) and len(history) >= 3
    events = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events.count("pause") == 1 and events.count("stop") == 1 and "resume" in events
    assert {"reset_failed"} <= set(events)
    morning = (run_dir / "morning.md").read_text()
    assert "faults (failed attempts): hook_timeout 1, reset_hook 2" in morning
    assert "| 2 | hook_timeout |" in morning and "resumed after a restart" in morning
    assert (run_dir / "morning.png").stat().st_size > 1000
    assert all(e.metadata["stage"] == "rl-1" for e in EpisodeStore(run_dir / "d_rl").episodes())

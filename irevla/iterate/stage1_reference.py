"""Stage 1 of iRe-VLA in one file: online RL of a VLA's action head on a simulated task, VLM frozen.

Read this first; the production path does the same thing spread over processes. Here everything runs in one process,
top to bottom, with no transport:

1. load a policy checkpoint (the torch VLA) and a simulated task;
2. build the learner (JAX) for the policy's head: `HeadSpec.from_policy` gives the head's sizes, the current head
   is the starting actor, and the algorithm (SAC by default, PPO) comes from `irevla.learner.registry`;
3. **demo rollouts**: run the starting VLA deterministically; its successful episodes seed the demo buffer (the
   paper's SACfD: each SAC batch is half demo, half online);
4. **explore**: a `LatentActor` encodes each observation once with the frozen VLM (the latent is all the learner
   ever sees), samples ``tanh(mu + std * eps)`` around the head's mean, and every step goes to
   ``learner.ingest`` as a `Transition` message (the episode's end as an `EpisodeEnd` with the env's success);
5. **update** as many times as the data allows (``updates_per_transition``) and hand the new head to the actor
   every ``publish_every`` updates (``head_message`` -> ``actor.apply_head``);
6. save the trained head into a new policy checkpoint (what stage 2 starts from).

    python -m irevla.iterate.stage1_reference --policy runs/demo/sft/policy --task button-press-v3 \\
        --variation hand:0.06,0,0 --env-steps 5000 --out runs/stage1-ref

The production path: `irevla iterate` (`irevla.iterate.loop.stage_rl`) runs step 3-4 in the loop process and the
learner in its own process (`irevla learner serve`, `irevla.learner.process.serve`), with the messages over ZeroMQ;
on the robot the actor is a ROS 2 node. The learner's settings are a loop config's ``rl:`` learner parts
(``--config``: ``algorithm``, ``learner``, ``ppo``; `irevla learner init --config` reads the same file).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from irevla.transport.messages import EpisodeEnd, Transition


def rollout(env, actor, seed: int, episode: int, explore: bool,
            send: Callable[[Transition | EpisodeEnd], None]) -> tuple[bool, int]:
    """One episode of `actor` in `env`; every step and the end go to `send` as the learner's messages."""
    from irevla.spec import Observation

    actor.start_episode()
    obs, info = env.reset(seed=seed)
    step, done = 0, False
    while not done:
        observation = Observation.from_gym(obs)
        tokens, mask = actor.observe(observation)  # the frozen VLM, once per observation
        action = actor.act(explore)
        obs, _, terminated, truncated, info = env.step(action)
        send(Transition(episode=episode, step=step, latent_tokens=tokens, latent_mask=mask,
                        proprio=observation.proprio.astype(np.float32), action=action.astype(np.float32),
                        intervention=False, policy_version=actor.version))
        step += 1
        done = bool(terminated or truncated)
    success = bool(info.get("success", False))
    final = Observation.from_gym(obs)  # the next observation of the last step
    tokens, mask = actor.observe(final)
    send(EpisodeEnd(episode=episode, steps=step, success=success, final_tokens=tokens, final_mask=mask,
                    final_proprio=final.proprio.astype(np.float32)))
    return success, step


def run(policy_path: str | Path, task: str, env_steps: int, out: str | Path, *, family: str = "metaworld",
        variation: str = "", demo_rollouts: int = 10, settings_path: str | Path | None = None,
        latent: str = "pooled", max_episode_steps: int | None = None, seed: int = 0, log=print) -> dict:
    """Stage 1 on `task` for `env_steps` exploring env steps; writes ``out/policy`` (and ``out/head.safetensors``).
    Returns a summary (counts, success rates, paths); ``summary["learner"]`` is the trained learner itself."""
    import torch

    from irevla.iterate.handoff import load_learner_settings, merge_head_file
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.process import save_final_head
    from irevla.learner.registry import get_algorithm
    from irevla.policy.checkpoint import load_policy, save_policy
    from irevla.policy.latent_actor import LatentActor
    from irevla.sim.registry import make_env_by_name

    out = Path(out)
    # 1. the VLA and the task
    policy = load_policy(policy_path)
    image_size = policy.observation_spec.cameras[policy.cameras[0]][0]
    env = make_env_by_name(family, task, cameras=policy.cameras, image_size=image_size,
                           max_episode_steps=max_episode_steps, variation=variation)

    # 2. the learner: the same settings `irevla learner serve` reads from its learner.yaml
    algorithm, learner_config, ppo = load_learner_settings(settings_path)
    entry = get_algorithm(algorithm)
    config = entry.config({"learner": learner_config.model_dump(mode="json"), "ppo": ppo},
                          str(settings_path or "<defaults>"))
    spec = HeadSpec.from_policy(policy, latent=latent)
    learner = entry.create(spec, config, policy.head_state())
    actor = LatentActor(policy, latent, seed=seed)
    actor.apply_head(*learner.head_message())  # the learner's exploration std; the head is the VLA's own
    start_head = {name: tensor.clone() for name, tensor in policy.head_state().items()}
    episode = 0
    try:
        # 3. demo rollouts: the starting VLA's successes seed the demo buffer
        demo_successes = 0
        for _ in range(demo_rollouts):
            messages: list = []
            success, steps = rollout(env, actor, 10_000 * (seed + 1) + episode, episode, False, messages.append)
            if success:
                learner.add_demo(learner.assemble(messages[:-1], messages[-1]))
                demo_successes += 1
            episode += 1
        log(f"demo rollouts: {demo_successes}/{demo_rollouts} successes -> {len(learner.demo)} demo transitions")

        # 4.-5. explore, learn, hand the new head to the actor
        since_apply, explored, history, started = 0, 0, [], time.monotonic()

        def send(message: Transition | EpisodeEnd) -> None:
            nonlocal since_apply
            learner.ingest(message)
            for _ in range(min(learner.updates_allowed(), 8)):  # 8: "free-running" stays tied to the env
                learner.update()
                since_apply += 1
                if since_apply >= config.publish_every:
                    actor.apply_head(*learner.head_message())
                    since_apply = 0

        while explored < env_steps:
            success, steps = rollout(env, actor, 10_000 * (seed + 1) + episode, episode, True, send)
            explored += steps
            history.append(success)
            episode += 1
            info = " ".join(f"{k} {v:.3g}" for k, v in sorted(learner.last_info.items())
                            if k in ("critic_loss", "actor_loss", "alpha", "policy_loss", "value_loss"))
            log(f"episode {episode}: {'success' if success else 'failure'} in {steps} steps | env steps "
                f"{explored}/{env_steps} | success (last 20) {np.mean(history[-20:]):.2f} | updates "
                f"{learner.updates} | head v{actor.version} | {time.monotonic() - started:.0f} s {info}")
    finally:
        env.close()

    # 6. the trained head (the mean, no exploration) into a new checkpoint
    head_path = save_final_head(learner, out / "head.safetensors")
    merge_head_file(policy, head_path)
    changed = sum(not torch.equal(start_head[name], tensor) for name, tensor in policy.head_state().items())
    checkpoint_id = save_policy(policy, out / "policy", info={
        "stage": "stage1-reference", "task": f"{task}[{variation}]" if variation else task, "algorithm": algorithm,
        "env_steps": explored, "updates": learner.updates, "source_policy": str(policy_path)})
    log(f"wrote {out / 'policy'} ({changed} head tensors changed by {learner.updates} updates)")
    return {"policy": str(out / "policy"), "checkpoint_id": checkpoint_id, "head": str(head_path),
            "algorithm": algorithm, "episodes": learner.episodes, "env_steps": explored, "updates": learner.updates,
            "demo_successes": demo_successes, "explore_success": float(np.mean(history)) if history else None,
            "changed_head_tensors": changed, "learner": learner}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m irevla.iterate.stage1_reference",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="policy checkpoint directory (the starting VLA)")
    parser.add_argument("--task", required=True, help="simulated task, e.g. button-press-v3")
    parser.add_argument("--family", default="metaworld", choices=("metaworld", "kitchen"))
    parser.add_argument("--variation", default="", help="e.g. hand:0.06,0,0 or color:red (irevla/sim/variations.py)")
    parser.add_argument("--env-steps", type=int, required=True, help="budget of exploring env steps")
    parser.add_argument("--out", required=True, help="directory for the new checkpoint (out/policy)")
    parser.add_argument("--demo-rollouts", type=int, default=10, help="rollouts of the starting VLA")
    parser.add_argument("--config", help="learner settings YAML: algorithm, learner, ppo (as a loop's rl: section)")
    parser.add_argument("--latent", default="pooled", choices=("pooled", "tokens"))
    parser.add_argument("--max-episode-steps", type=int, help="time limit (default: the task's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and JAX")
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    return run(args.policy, args.task, args.env_steps, args.out, family=args.family, variation=args.variation,
               demo_rollouts=args.demo_rollouts, settings_path=args.config, latent=args.latent,
               max_episode_steps=args.max_episode_steps, seed=args.seed)


if __name__ == "__main__":
    import sys

    from irevla.errors import UserError

    try:
        main()
    except UserError as exc:  # a bad checkpoint, task or settings file: one line naming it, as `irevla` prints
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

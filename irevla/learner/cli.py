"""The loop's commands: ``irevla iterate`` (the iRe-VLA loop) and ``irevla learner serve`` (the stage-1 learner).

Only argparse here at import time; torch/jax load when a command runs.
"""

from __future__ import annotations

import argparse

ITERATE_EPILOG = """\
examples:
  irevla iterate --config config/demo.yaml           # the simulated demo (what `make demo` runs)
  irevla iterate --config my_run.yaml --set rl.max_env_steps=50000
  # killed (even kill -9)? run the same command again: finished stages are kept, the current one resumes.

The run directory gets state.json (finished stages), report.md / report.json / report.png, expert/ (D_e),
d_rl/ (D_RL), sft/, rl-K/, stage2-K/ and eval results. docs/overnight.md explains a robot run.
"""


def _cmd_iterate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from irevla.config import load_config
    from irevla.learner.loop import run_iterate
    from irevla.learner.loop_config import IterateConfig
    from irevla.policy.cli import _parse_set

    overrides = _parse_set(args.set or [])
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    config = load_config(args.config, IterateConfig, overrides=overrides)

    class _Bar:
        def __init__(self, name: str, budget: int) -> None:
            self.bar = tqdm(total=budget, desc=f"{name} env steps", unit="step", dynamic_ncols=True)

        def update(self, info: dict) -> None:
            self.bar.n = min(info["env_steps"], self.bar.total)
            phase = "demo rollouts" if info["collecting"] else "exploring"
            self.bar.set_postfix(episodes=info["episodes"], successes=info["successes"],
                                 rolling=f"{info['rolling']:.2f}", phase=phase)
            self.bar.refresh()

        def close(self) -> None:
            self.bar.close()

    state = run_iterate(config, progress_factory=_Bar)
    from pathlib import Path

    report = Path(config.run_dir) / "report.md"
    if report.is_file():
        print()
        print(report.read_text())
    return 0 if state else 1


def _cmd_learner_serve(args: argparse.Namespace) -> int:
    import json
    import logging
    import os
    import signal
    from pathlib import Path

    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={args.threads}")
    import yaml

    from irevla.atomic_io import atomic_write_text
    from irevla.config import validate_config
    from irevla.head_file import load_head_arrays
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.learner import Learner, LearnerConfig, serve
    from irevla.learner.replay import LatentReplay
    from irevla.learner.transport import LearnerServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    init, out = Path(args.init), Path(args.out)
    spec = HeadSpec.from_dict(json.loads((init / "spec.json").read_text()))
    settings = yaml.safe_load((init / "learner.yaml").read_text())
    algorithm = settings.get("algorithm", "sac")
    if algorithm == "ppo":
        from irevla.learner.ppo import PPOConfig, PPOLearner

        learner_type, config = PPOLearner, validate_config(settings.get("ppo") or {}, PPOConfig, str(init / "ppo"))
    else:
        learner_type, config = Learner, validate_config(settings["learner"], LearnerConfig,
                                                        str(init / "learner.yaml"))
    snapshot = out / "snapshot"
    if (snapshot / "learner.json").is_file():
        learner = learner_type.restore(snapshot, spec, config)
        logging.info("resumed from %s: %d updates, %d episodes", snapshot, learner.updates, learner.episodes)
    else:
        state, _ = load_head_arrays(init / "head.safetensors")
        if algorithm == "ppo":
            learner = learner_type(spec, config, state)
        else:
            learner = learner_type(spec, config, state, demo=LatentReplay.load(
                init / "demo.safetensors", capacity=config.demo_capacity))
    stopping = {"now": False}

    def _stop(signum, frame):  # noqa: ARG001
        stopping["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with LearnerServer(args.bind, allow_remote=args.allow_remote) as server:
        if args.address_file:
            atomic_write_text(args.address_file, server.address + "\n")
        logging.info("learner (%s, %s latents) serving on %s", algorithm, spec.latent, server.address)
        # Started by `irevla iterate`: if that process dies (even kill -9), the learner snapshots and exits instead of
        # running on as an orphan; the rerun starts a new one that resumes from the snapshot.
        parent = os.getppid() if args.exit_with_parent else None
        serve(learner, server, out, stop=lambda: stopping["now"] or (parent is not None and os.getppid() != parent))
    logging.info("learner finished: %d updates, %d episodes (%d successes)", learner.updates, learner.episodes,
                 learner.successes)
    return 0


def add_iterate_parser(commands) -> None:
    parser = commands.add_parser("iterate", help="run the iRe-VLA loop (SFT -> RL -> consolidation -> eval)",
                                 description="Run Algorithm 1 of iRe-VLA as configured; rerun to resume.",
                                 epilog=ITERATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="loop config YAML (irevla/learner/loop_config.py)")
    parser.add_argument("--run-dir", help="override run_dir")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key (repeatable)")
    parser.set_defaults(func=_cmd_iterate)


def add_learner_parser(commands) -> None:
    learner = commands.add_parser("learner", help="the stage-1 RL learner process")
    sub = learner.add_subparsers(dest="learner_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="train the head on what actors send; publish it back",
                           description="Serve a learner: the token comes from IREVLA_LEARNER_TOKEN or "
                                       "IREVLA_LEARNER_TOKEN_FILE. SIGTERM: snapshot, write out/head.safetensors, "
                                       "exit 0.")
    serve.add_argument("--init", required=True, help="directory with spec.json, head.safetensors, learner.yaml, "
                                                     "demo.safetensors (written by irevla iterate)")
    serve.add_argument("--out", required=True, help="snapshots and the final head go here; resumes from it")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ address (default loopback)")
    serve.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    serve.add_argument("--address-file", help="write the bound address here once listening")
    serve.add_argument("--threads", type=int, default=1, help="CPU threads for XLA")
    serve.add_argument("--exit-with-parent", action="store_true", help="stop (snapshot, exit) when the process "
                                                                      "that started this one dies")
    serve.set_defaults(func=_cmd_learner_serve)

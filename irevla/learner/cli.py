"""``irevla learner serve``: the stage-1 learner process (JAX; no torch). The argument parser is in
`irevla.iterate.cli`, with the ``init`` and ``export`` commands that need the torch policy."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    """``irevla learner serve``: run the learner process (the parser is in `irevla.iterate.cli`)."""
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
    from irevla.transport.zmq_link import LearnerServer

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

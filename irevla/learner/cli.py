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

    from irevla.config import ConfigError
    from irevla.errors import MissingFileError
    from irevla.transport.learner_side import LearnerServer
    from irevla.transport.wire import learner_auth

    # The user's mistakes first, before JAX loads: no token or keys (the most common one), a bad --bind, a wrong
    # --init. CURVE keys, or on loopback the token ($IREVLA_LEARNER_TOKEN...); else a TransportError saying which.
    auth = learner_auth(args.bind, curve_secret=args.curve_secret, curve_clients=args.curve_clients)
    init, out = Path(args.init), Path(args.out)
    for name in ("spec.json", "learner.yaml"):
        if not (init / name).is_file():
            raise MissingFileError(f"{init / name}: not found; --init must be a learner_init directory (written by "
                                   f"`irevla learner init` or `irevla iterate`)")
    try:
        spec_dict = json.loads((init / "spec.json").read_text())
        settings = yaml.safe_load((init / "learner.yaml").read_text()) or {}
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{init}: corrupt learner_init file: {exc}") from None
    from irevla.learner.registry import get_algorithm  # names and settings models only: no JAX yet

    algorithm = settings.get("algorithm", "sac")
    entry = get_algorithm(algorithm, where=f"{init / 'learner.yaml'}: algorithm")
    config = entry.config(settings, str(init / "learner.yaml"))
    from irevla.config import load_config
    from irevla.metrics_log import LoggingConfig, check_wandb

    logging_config = load_config(args.logging, LoggingConfig) if args.logging else LoggingConfig()
    check_wandb(logging_config.wandb)
    if args.metrics_every < 1:
        raise ConfigError(f"--metrics-every: expected a positive number of updates, got {args.metrics_every}")

    from irevla.atomic_io import atomic_write_text
    from irevla.head_file import load_head_arrays
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.process import episode_metrics, learner_metrics, serve
    from irevla.learner.replay import LatentReplay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = HeadSpec.from_dict(spec_dict)
    snapshot = out / "snapshot"
    resumed = (snapshot / "learner.json").is_file()
    if resumed:
        learner = entry.restore(snapshot, spec, config)
        logging.info("resumed from %s: %d updates, %d episodes", snapshot, learner.updates, learner.episodes)
    else:
        state, _ = load_head_arrays(init / "head.safetensors")
        learner = entry.create(spec, config, state, demo=LatentReplay.load(init / "demo.safetensors",
                                                                           capacity=config.demo_capacity))
    stopping = {"now": False}

    def _stop(signum, frame):  # noqa: ARG001
        stopping["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # out/metrics.jsonl + out/tensorboard (+ wandb): before listening, so a wandb failure stops the start; a resumed
    # learner drops the records past its snapshot
    with learner_metrics(out, logging_config, resume_step=learner.updates if resumed else None,
                         config={"algorithm": algorithm, **settings}) as metrics, \
            episode_metrics(out, logging_config, learner.episodes if resumed else None) as per_episode, \
            LearnerServer(args.bind, auth) as server:
        if args.address_file:
            atomic_write_text(args.address_file, server.address + "\n")
        logging.info("learner (%s, %s latents) serving on %s", algorithm, spec.latent, server.address)
        # Started by `irevla iterate`: if that process dies (even kill -9), the learner snapshots and exits instead of
        # running on as an orphan; the rerun starts a new one that resumes from the snapshot.
        parent = os.getppid() if args.exit_with_parent else None
        serve(learner, server, out, stop=lambda: stopping["now"] or (parent is not None and os.getppid() != parent),
              metrics=metrics, metrics_every=args.metrics_every, episode_metrics=per_episode)
    logging.info("learner finished: %d updates, %d episodes (%d successes)", learner.updates, learner.episodes,
                 learner.successes)
    return 0

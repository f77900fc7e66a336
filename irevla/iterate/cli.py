"""The loop's commands: ``irevla iterate`` (the iRe-VLA loop) and ``irevla learner`` (the stage-1 learner: ``init``
writes what it starts from, ``serve`` runs it (`irevla.learner.cli`, JAX only), ``export`` turns its trained head
into a policy checkpoint).

Only argparse here at import time; torch/jax load when a command runs.
"""

from __future__ import annotations

import argparse

ITERATE_EPILOG = """\
examples:
  irevla iterate --config config/demo.yaml           # the simulated demo (what `make demo` runs)
  irevla iterate --config my_run.yaml --set rl.max_env_steps=50000
  # killed (even kill -9)? run the same command again: finished stages are kept, the current one resumes.
  irevla iterate morning runs/pick                   # the night's report: runs/pick/morning.md, morning.png

The run directory gets state.json (finished stages), report.md / report.json / report.png, expert/ (D_e),
d_rl/ (D_RL), sft/, rl-K/, stage2-K/ and eval results. docs/overnight.md explains a robot run.
"""

LEARNER_EPILOG = """\
stage 1 by hand (the robot; irevla iterate does all of this itself in simulation), see docs/overnight.md:
  irevla learner init --policy runs/pick/sft/policy --demos data/pick --task pick \\
      --config learner.yaml --out runs/pick/rl-1/learner_init      # once: head, settings, demo buffer
  irevla learner serve --init runs/pick/rl-1/learner_init --out runs/pick/rl-1/learner
  ... the robot actor (rl_actor.launch.py) runs episodes; stop the learner with SIGTERM / Ctrl-C ...
  irevla learner export --policy runs/pick/sft/policy \\
      --head runs/pick/rl-1/learner/head.safetensors --out runs/pick/rl-1/policy   # for stage 2 / deployment

`serve` resumes from the snapshot in its --out when there is one (a new init is then not read).
"""


class StageBar:
    """A stage's progress bar for `irevla.iterate.loop.run_iterate` (its ProgressFactory): done of total, rate, ETA
    (tqdm's), and the stage's postfix (successes, loss, ...)."""

    def __init__(self, name: str, total: int, file=None) -> None:
        from tqdm import tqdm

        # smoothing=0: the rate (and with it the ETA) is the average since the stage started, its start-up included.
        # An evaluation's episodes end in bursts (a batch's successes close together): a moving average jumps.
        self.bar = tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, smoothing=0, file=file)
        self.started = False

    def update(self, info: dict) -> None:
        self.bar.unit = info.get("unit", "step")
        if not self.started:
            self.started = True
            # a resumed stage's earlier work is no part of this run's rate
            self.bar.initial = self.bar.n = self.bar.last_print_n = min(info.get("initial", 0), self.bar.total)
        done = min(info["done"], self.bar.total)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix(info.get("postfix", {}), refresh=True)

    def close(self) -> None:
        self.bar.close()


def _cmd_iterate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from irevla.config import parse_overrides
    from irevla.iterate.config import load_iterate_config
    from irevla.iterate.loop import run_iterate

    if args.config is None:
        from irevla.errors import UserError

        raise UserError("irevla iterate: --config is required (or: irevla iterate morning RUN_DIR)")
    overrides = parse_overrides(args.set or [])
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    config = load_iterate_config(args.config, overrides)  # every stage's settings checked, before anything runs

    # Log lines through tqdm.write: printed above the bar of the running stage instead of through it.
    state = run_iterate(config, log=lambda message: tqdm.write(str(message)), progress_factory=StageBar)
    from pathlib import Path

    report = Path(config.run_dir) / "report.md"
    if report.is_file():
        print()
        print(report.read_text())
    return 0 if state else 1


def _cmd_learner_serve(args: argparse.Namespace) -> int:
    from irevla.learner.cli import cmd_serve  # JAX: loaded only when the learner runs

    return cmd_serve(args)


def _cmd_learner_keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irevla.errors import UserError
    from irevla.transport.wire import write_keys

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"{args.out}: exists and is not a directory (--out is the directory the keys go to)")
    actors = args.actor or ["actor"]
    write_keys(args.out, actors)
    print(f"""wrote CURVE keys to {args.out}; the *.key_secret files are private (0600): copy each only where it runs.
learner:   irevla learner serve ... --bind tcp://<its address>:5555 \\
               --curve-secret {args.out}/learner.key_secret --curve-clients {args.out}/clients
actor ({', '.join(actors)}; copy learner.key and its <actor>.key_secret to it), vla_policy's rl_actor settings:
           rl_actor.curve_server_key: <dir>/learner.key
           rl_actor.curve_secret: <dir>/<actor>.key_secret""")
    return 0


def _check_init_target(out, force: bool) -> None:
    """Refuse to replace a complete learner_init without --force, and anything that is not a learner_init at all."""
    from irevla.iterate.handoff import DONE, INIT_FILES, HandoffError, is_complete_init

    if out.exists() and not out.is_dir():
        raise HandoffError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        return
    others = sorted(p.name for p in out.iterdir() if p.name not in (*INIT_FILES, DONE)
                    and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if others:
        raise HandoffError(f"{out}: holds {others[:5]}{' ...' if len(others) > 5 else ''}, not a learner_init "
                           f"directory; refusing to replace it (choose another --out)")
    if is_complete_init(out) and not force:
        raise HandoffError(f"{out}: a complete learner_init directory is already there; --force replaces it")


def _cmd_learner_init(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from irevla.iterate.handoff import HandoffError, load_learner_settings, write_learner_init

    out = Path(args.out)
    _check_init_target(out, args.force)
    algorithm, learner, ppo = load_learner_settings(args.config)
    if args.demos:  # before loading the policy: a wrong directory or task fails in a second, not after minutes
        from irevla.data.store import EpisodeCollection

        collection = EpisodeCollection(args.demos)  # a missing directory: MissingFileError naming it
        if not collection.index(task=args.task, success=True):
            there = sorted({info.task.full_name for info in collection.index(success=True)})
            what = f" of task {args.task!r}" if args.task else ""
            raise HandoffError(f"{', '.join(map(str, args.demos))}: no successful episodes{what}"
                               + (f" (successful episodes there are of {there})" if there else ""))
    import torch

    from irevla.policy.checkpoint import load_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.policy, device=args.device)  # missing or corrupt: the error names the file
    summary = write_learner_init(out, policy, latent=args.latent, algorithm=algorithm, learner=learner, ppo=ppo,
                                 demo_dirs=args.demos, task=args.task, log=print,
                                 progress=True)
    demos = (f"{summary.episodes} successful episodes ({summary.transitions} transitions) of "
             f"{', '.join(summary.tasks)}" if args.demos else "empty (no --demos)")
    print(f"wrote {out}: checkpoint {policy.checkpoint_id}, {summary.latent} latents, {summary.algorithm}; "
          f"demo buffer {demos}")
    if summary.overflowed:
        print(f"warning: the demos hold {summary.observations} observations, more than learner.demo_capacity "
              f"{summary.demo_capacity}: the oldest were dropped (raise it in --config)", file=sys.stderr)
    print(f"next: irevla learner serve --init {out} --out <learner dir>")
    return 0


def _cmd_learner_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irevla.errors import MissingFileError
    from irevla.iterate.handoff import HandoffError, merge_head_file

    out, policy_path, head_path = Path(args.out), Path(args.policy), Path(args.head)
    if out.resolve() == policy_path.resolve():
        raise HandoffError(f"{out}: that is the --policy checkpoint itself; export into a new directory")
    if out.exists():
        if not out.is_dir():
            raise HandoffError(f"{out}: exists and is not a directory")
        if any(out.iterdir()):
            if not (out / "policy.json").is_file():
                raise HandoffError(f"{out}: exists and is not a policy checkpoint; refusing to replace it (choose "
                                   f"another --out)")
            if not args.force:
                raise HandoffError(f"{out}: a policy checkpoint is already there; --force replaces it")
    if not head_path.is_file():
        raise MissingFileError(f"{head_path}: head file not found (the learner writes <its --out>/head.safetensors "
                               f"when it stops)")
    import torch

    from irevla.policy.checkpoint import file_sha256, load_head, load_policy, read_manifest, save_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(policy_path)  # missing or corrupt: the error names the file
    source_id, before = policy.checkpoint_id, policy.head_state()
    metadata = merge_head_file(policy, head_path)  # names or shapes that do not fit: nothing is written
    merged = policy.head_state()
    changed = sorted(name for name in merged if not torch.equal(merged[name], before[name]))
    checkpoint_id = save_policy(policy, out, info={
        "stage": "learner-export", "policy": str(policy_path), "policy_checkpoint_id": source_id,
        "head": str(head_path), "head_sha256": file_sha256(head_path), "head_metadata": metadata})
    read_manifest(out, verify=True)  # what was written reads back with every hash right ...
    saved, _ = load_head(out / "head.safetensors")
    if sorted(saved) != sorted(merged) or not all(torch.equal(saved[n], merged[n]) for n in merged):
        raise HandoffError(f"{out / 'head.safetensors'}: the saved head differs from the merged one")  # ... and holds it
    print(f"wrote {out}: checkpoint {checkpoint_id} = {policy_path} ({source_id}) with the head of {head_path} "
          f"({len(changed)} of {len(merged)} head tensors changed; learner updates: "
          f"{metadata.get('updates', 'unknown')})")
    if not changed:
        print("note: the head equals the policy's own: the learner did not change it")
    return 0


def add_iterate_parser(commands) -> None:
    parser = commands.add_parser("iterate", help="run the iRe-VLA loop (SFT -> RL -> consolidation -> eval)",
                                 description="Run Algorithm 1 of iRe-VLA as configured; rerun to resume.",
                                 epilog=ITERATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="loop config YAML (irevla/iterate/config.py); required to run the loop")
    parser.add_argument("--run-dir", help="override run_dir")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key (repeatable)")
    parser.set_defaults(func=_cmd_iterate)
    sub = parser.add_subparsers(dest="iterate_command", metavar="[morning]", title="other actions")
    morning = sub.add_parser("morning", help="write RUN_DIR/morning.md and morning.png: the night's report",
                             description="The morning report of an unattended run (irevla.iterate.morning): stages "
                                         "and their times, episodes and successes per hour, interventions per "
                                         "episode, detector disagreements, pauses with their reasons and "
                                         "durations. Reads the run directory only; safe while the run goes on.")
    morning.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (run_dir of the loop config)")
    morning.set_defaults(func=_cmd_morning)


def _cmd_morning(args: argparse.Namespace) -> int:
    from pathlib import Path

    from irevla.iterate.morning import MORNING_MD, MORNING_PNG, write_morning_report

    write_morning_report(args.run_dir)
    print((Path(args.run_dir) / MORNING_MD).read_text())
    print(f"wrote {Path(args.run_dir) / MORNING_MD} and {Path(args.run_dir) / MORNING_PNG}")
    return 0


def add_learner_parser(commands) -> None:
    learner = commands.add_parser("learner", help="the stage-1 RL learner: init, serve, export",
                                  description="The stage-1 learner (VLM frozen, the head trains on latents).",
                                  epilog=LEARNER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = learner.add_subparsers(dest="learner_command", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="write the directory `serve --init` starts from, for a policy checkpoint",
                          description="Write a learner_init directory: spec.json (the head's sizes and normaliser), "
                                      "head.safetensors (the starting head), learner.yaml (the settings) and "
                                      "demo.safetensors (the demo buffer: the successful episodes of --demos, "
                                      "encoded once by the frozen VLM). irevla iterate writes the same per RL "
                                      "stage; this is for the robot. Written into a temporary directory and "
                                      "renamed into place: an error leaves --out as it was.")
    init.add_argument("--policy", required=True, metavar="CKPT", help="policy checkpoint (e.g. runs/pick/sft/policy)")
    init.add_argument("--out", required=True, metavar="DIR", help="the learner_init directory to write")
    init.add_argument("--demos", nargs="+", metavar="DIR", help="episode directories (e.g. the teleop demos D_e); "
                                                               "their successful episodes fill the demo buffer "
                                                               "(default: an empty one)")
    init.add_argument("--task", metavar="NAME", help="only episodes of this task (name or full name; default: all)")
    init.add_argument("--latent", choices=("pooled", "tokens"), default="pooled",
                      help="what the replay stores (rl.latent; default pooled, see docs/overnight.md)")
    init.add_argument("--config", metavar="YAML", help="learner settings: algorithm, learner, ppo -- as in a loop "
                                                       "config's rl: section (default: their defaults)")
    init.add_argument("--device", help="torch device that encodes the demos (e.g. cuda; default cpu)")
    init.add_argument("--threads", type=int, help="torch CPU threads")
    init.add_argument("--force", action="store_true", help="replace a complete learner_init already at --out")
    init.set_defaults(func=_cmd_learner_init)

    serve = sub.add_parser("serve", help="train the head on what actors send; publish it back",
                           description="Serve a learner. On loopback the token comes from IREVLA_LEARNER_TOKEN or "
                                       "IREVLA_LEARNER_TOKEN_FILE; any other --bind needs CURVE keys (--curve-secret, "
                                       "--curve-clients; irevla learner keys). SIGTERM: snapshot, write "
                                       "out/head.safetensors, exit 0.")
    serve.add_argument("--init", required=True, help="directory with spec.json, head.safetensors, learner.yaml, "
                                                     "demo.safetensors (irevla learner init, or irevla iterate)")
    serve.add_argument("--out", required=True, help="snapshots and the final head go here; resumes from it")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ address (default loopback; any "
                                                                      "other needs the CURVE keys)")
    serve.add_argument("--curve-secret", metavar="FILE", help="CURVE: the learner's secret key (learner.key_secret "
                                                             "from irevla learner keys); encrypts the link")
    serve.add_argument("--curve-clients", metavar="DIR", help="CURVE: directory of the actor public keys admitted "
                                                             "(the clients/ directory irevla learner keys wrote)")
    serve.add_argument("--address-file", help="write the bound address here once listening")
    serve.add_argument("--threads", type=int, default=1, help="CPU threads for XLA")
    serve.add_argument("--exit-with-parent", action="store_true", help="stop (snapshot, exit) when the process "
                                                                      "that started this one dies")
    serve.add_argument("--logging", metavar="FILE", help="YAML of the metrics settings (irevla.metrics_log."
                                                         "LoggingConfig: tensorboard, wandb); default: TensorBoard "
                                                         "events in out/tensorboard, no wandb")
    serve.add_argument("--metrics-every", type=int, default=50, metavar="N",
                       help="write the update metrics (out/metrics.jsonl, TensorBoard) every N updates (default 50)")
    serve.set_defaults(func=_cmd_learner_serve)

    keys = sub.add_parser("keys", help="write CURVE key pairs for a learner reachable beyond this machine",
                          description="Write learner.key (public: give it to every actor), learner.key_secret, "
                                      "<actor>.key_secret per --actor (mode 0600) and clients/<actor>.key (the "
                                      "public keys the learner admits). Never replaces existing keys.")
    keys.add_argument("--out", required=True, metavar="DIR", help="directory to write the keys to")
    keys.add_argument("--actor", action="append", metavar="NAME", help="one key pair per actor (repeatable; "
                                                                      "default: one named 'actor')")
    keys.set_defaults(func=_cmd_learner_keys)

    export = sub.add_parser("export", help="merge the learner's trained head into a policy checkpoint",
                            description="Load --policy, replace its head's tensors by those in --head (a head file: "
                                        "the learner writes <its --out>/head.safetensors when it stops; pooled "
                                        "latents train mlp.* only, the rest of the head stays), save the result to "
                                        "--out and verify it. Stage 2 (irevla sft --init) and deployment start "
                                        "from it. A head that does not fit the policy writes nothing.")
    export.add_argument("--policy", required=True, metavar="CKPT", help="the checkpoint the learner started from")
    export.add_argument("--head", required=True, metavar="FILE", help="head file (e.g. runs/pick/rl-1/learner/"
                                                                      "head.safetensors)")
    export.add_argument("--out", required=True, metavar="DIR", help="the new checkpoint directory")
    export.add_argument("--threads", type=int, help="torch CPU threads")
    export.add_argument("--force", action="store_true", help="replace a checkpoint already at --out")
    export.set_defaults(func=_cmd_learner_export)

"""The policy's commands for the `irevla` CLI: ``irevla sft`` (train) and ``irevla policy info|eval``.

`add_sft_parser(subparsers)` and `add_policy_parser(subparsers)` add them to the main parser; each sets ``func``.
Nothing heavy is imported until a command runs, so ``irevla --help`` stays fast. Errors a user can fix surface as
`irevla.errors.UserError`s (`irevla.config.ConfigError`, `irevla.spec.ContractError`,
`irevla.policy.errors.CheckpointError`, `irevla.errors.MissingFileError`), which the main CLI prints as one line
(exit 2).
"""

from __future__ import annotations

import argparse
import json

SFT_EPILOG = """\
examples:
  irevla sft --config config/sft.yaml                        # stage 0: train on the dirs in the config
  irevla sft --data runs/demo/expert --out runs/sft --steps 3000 --set policy.backbone_training=full
  irevla sft --config config/sft.yaml --resume               # continue an interrupted run from <out>/last
  irevla sft --config config/sft.yaml --init runs/sft/policy --data runs/expert runs/rl --out runs/stage2

The run directory gets config.yaml, metrics.jsonl, tensorboard/, last/ (resumable) and policy/ (the result).
Every key is documented in irevla/policy/config.py and docs/policy.md.
"""


def _sft_config(args: argparse.Namespace):
    from irevla.config import apply_overrides, load_config, parse_overrides, validate_config
    from irevla.policy.config import SFTConfig

    overrides = parse_overrides(args.set or [])
    if args.data:
        overrides["data.dirs"] = list(args.data)
    if args.out:
        overrides["out"] = args.out
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    if args.init:
        overrides["init"] = args.init
    if args.config:
        return load_config(args.config, SFTConfig, overrides)
    return validate_config(apply_overrides({}, overrides, "<command line>"), SFTConfig, "<command line>")


def _cmd_sft(args: argparse.Namespace) -> int:
    config = _sft_config(args)
    from irevla.policy.sft import run_sft

    result = run_sft(config, resume=args.resume, stop_after=args.stop_after, log=None if args.quiet else print)
    if result.process_index == 0:  # under accelerate launch, every process returns; the first one reports
        print(result.format())
    return 0


def add_sft_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``irevla sft`` to the main parser's subcommands."""
    sft = subparsers.add_parser(
        "sft", help="supervised fine-tuning of the VLA on episode directories (stage 0 / stage 2)",
        description="Train the VLA (backbone via LoRA or fully, plus the action head) with MSE on recorded "
                    "episodes. Settings come from --config (YAML, irevla.policy.config.SFTConfig) and the flags "
                    "below, which override it.",
        epilog=SFT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sft.add_argument("--config", metavar="YAML", help="SFT config file (default: built-in defaults; then --data "
                                                       "is required)")
    sft.add_argument("--data", nargs="+", metavar="DIR", help="episode directories (overrides data.dirs)")
    sft.add_argument("--out", metavar="DIR", help="run directory (overrides out)")
    sft.add_argument("--steps", type=int, metavar="N", help="total optimiser steps (overrides train.steps)")
    sft.add_argument("--init", metavar="CKPT", help="start from this policy checkpoint (stage 2)")
    sft.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                                                           "(only steps/logging settings may change)")
    sft.add_argument("--stop-after", type=int, metavar="N", help="checkpoint and exit after step N (resume later)")
    sft.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override any config key, e.g. "
                                                                   "train.batch_size=64 policy.lora.r=16")
    sft.add_argument("--quiet", action="store_true", help="print only the final summary")
    sft.set_defaults(func=_cmd_sft)
    return sft


# -------------------------------------------------------------------------------------------------- policy ...
def _cmd_policy_info(args: argparse.Namespace) -> int:
    from irevla.policy.checkpoint import read_manifest

    manifest = read_manifest(args.checkpoint, verify=not args.no_verify)
    if args.json:
        print(json.dumps(manifest, indent=1, sort_keys=True))
        return 0
    config, info = manifest["config"], manifest.get("info", {})
    lora = manifest.get("lora")
    print(f"checkpoint   {args.checkpoint}  ({manifest['checkpoint_id']})")
    print(f"created      {manifest.get('created', '?')}  files verified: {'no' if args.no_verify else 'yes'}")
    print(f"backbone     {config['backbone']['kind']}  ({config['backbone'].get('pretrained') or 'random init'}; "
          f"base weights {manifest['base_weights']})")
    lora_text = f"r={lora['settings']['r']} on {len(lora['layers'])} layers" if lora else "none"
    print(f"LoRA         {lora_text}")
    print(f"cameras      {manifest['cameras']}")
    print(f"actions      {manifest['action_spec']['names']}")
    print(f"proprio      {manifest['observation_spec']['proprio_names']}")
    for key in ("stage", "step", "train_loss", "val_loss", "tasks"):
        if key in info:
            print(f"{key:12s} {info[key]}")
    return 0


def _cmd_policy_eval(args: argparse.Namespace) -> int:
    import torch

    from irevla.policy.checkpoint import load_policy
    from irevla.policy.rollout import evaluate_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    report = evaluate_policy(policy, args.tasks, episodes=args.episodes, family=args.family, seed=args.seed,
                             image_size=args.image_size, max_episode_steps=args.max_steps,
                             variation=args.variation, variation_seed=args.variation_seed, record_dir=args.record,
                             progress=None if args.quiet else print)
    print(report.format())
    if args.report:
        from pathlib import Path

        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=1))
    return 0


def add_policy_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``irevla policy info|eval`` to the main parser's subcommands."""
    policy = subparsers.add_parser("policy", help="inspect or evaluate a policy checkpoint",
                                   description="Inspect (info) or evaluate in simulation (eval) a policy checkpoint.")
    commands = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", help="print a checkpoint's settings and verify its files",
                               description="Print what a policy checkpoint holds and check every file's hash.")
    info.add_argument("checkpoint", help="checkpoint directory (e.g. runs/sft/policy)")
    info.add_argument("--json", action="store_true", help="print the whole policy.json")
    info.add_argument("--no-verify", action="store_true", help="skip re-hashing the weight files")
    info.set_defaults(func=_cmd_policy_info)

    evaluate = commands.add_parser(
        "eval", help="closed-loop success rate in simulation",
        description="Run the policy in simulated envs and print the success rate per task. Seeds start at "
                    "--seed (default 100000, away from the seeds demos are recorded with).")
    evaluate.add_argument("checkpoint", help="checkpoint directory")
    evaluate.add_argument("--tasks", nargs="+", required=True, metavar="TASK", help="task names")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes per task (default 10)")
    evaluate.add_argument("--family", default="metaworld", choices=("metaworld", "kitchen"))
    evaluate.add_argument("--seed", type=int, default=100_000, help="first reset seed (default 100000)")
    evaluate.add_argument("--image-size", type=int, help="render size (default: the training images' size)")
    evaluate.add_argument("--max-steps", type=int, help="time limit per episode (default: the env's)")
    evaluate.add_argument("--variation", default="", help="task variation, e.g. color:red")
    evaluate.add_argument("--variation-seed", type=int, default=0)
    evaluate.add_argument("--record", metavar="DIR", help="also store every rollout as an episode in DIR")
    evaluate.add_argument("--report", metavar="JSON", help="write the results as JSON")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads")
    evaluate.add_argument("--quiet", action="store_true", help="print only the table")
    evaluate.set_defaults(func=_cmd_policy_eval)
    return policy

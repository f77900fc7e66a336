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


def preset_table() -> list[dict]:
    """One row per preset, built on the meta device (no memory, no weights): kind, parameters (counted and
    published), bf16 weight memory, native image size, latent tokens per camera and width."""
    import torch

    from irevla.policy.backbones import build_backbone
    from irevla.policy.presets import PRESETS, preset_backbone_config

    rows = []
    for name, (kind, _, _, published) in PRESETS.items():
        config = preset_backbone_config(name)
        with torch.device("meta"):
            backbone = build_backbone(config)
        parameters = sum(p.numel() for p in backbone.parameters())
        rows.append({"preset": name, "kind": kind, "parameters": parameters, "published_parameters": published,
                     "bf16_weights_gb": parameters * 2 / 1e9, "image_size": config.image_size,
                     "tokens_per_camera": backbone.image_tokens_per_camera(), "width": backbone.hidden_size})
    return rows


def _cmd_policy_backbones(args: argparse.Namespace) -> int:
    from irevla.policy.backbones import KINDS

    rows = preset_table()
    if args.json:
        print(json.dumps({"kinds": list(KINDS), "presets": rows}, indent=1))
        return 0
    print(f"backbone kinds: {', '.join(KINDS)}  (backbone.kind; docs/policy.md, Backbones)")
    print("real-size presets (backbone.preset: random weights, for GPU benchmarks; counted on the meta device):")
    print(f"  {'preset':22s} {'kind':11s} {'parameters':>15s} {'bf16 weights':>13s} {'image':>6s} "
          f"{'tokens/camera':>14s} {'width':>6s}")
    for row in rows:
        print(f"  {row['preset']:22s} {row['kind']:11s} {row['parameters']:>15,d} "
              f"{row['bf16_weights_gb']:>10.2f} GB {row['image_size']:>6d} {row['tokens_per_camera']:>14d} "
              f"{row['width']:>6d}")
    print("latent length = cameras x tokens/camera + backbone.max_text_tokens; GPU latency and memory: "
          "python bench/gpu_check.py")
    return 0


def _cmd_policy_check_snapshot(args: argparse.Namespace) -> int:
    """Load a downloaded snapshot the way a policy will, on the CPU, and encode one image with it."""
    import time

    import torch

    from irevla.policy.backbones import build_backbone
    from irevla.policy.config import BackboneConfig

    config = BackboneConfig(kind=args.kind, pretrained=args.directory, dtype=args.dtype, image_size=args.image_size)
    start = time.perf_counter()
    backbone = build_backbone(config).eval()
    loaded_s = time.perf_counter() - start
    size = backbone.model_image_size() if hasattr(backbone, "model_image_size") else config.image_size
    with torch.inference_mode():
        latent = backbone.encode([torch.zeros(1, size, size, 3, dtype=torch.uint8)], ["pick up the red block"])
    if not torch.isfinite(latent.tokens).all():
        raise FloatingPointError(f"{args.directory}: the model's hidden states are not finite (corrupt weights?)")
    parameters = sum(p.numel() for p in backbone.parameters())
    tokenizer = getattr(backbone.tokenizer, "tokenizer", backbone.tokenizer)
    print(f"snapshot     {args.directory}: a {args.kind} model ({type(backbone.model).__name__}), loaded in "
          f"{loaded_s:.1f} s")
    print(f"parameters   {parameters:,d} ({args.dtype})")
    print(f"tokenizer    {type(tokenizer).__name__}; instructions padded to {backbone.tokenizer.max_tokens} tokens")
    print(f"images       {size} px, mean {backbone.image_mean}, std {backbone.image_std}")
    print(f"latent       {tuple(latent.tokens.shape[1:])} per observation with one camera "
          f"({backbone.image_tokens_per_camera()} image tokens + {backbone.tokenizer.max_tokens} text tokens)")
    print("ok: set policy.backbone.kind and policy.backbone.pretrained to use it")
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

    backbones = commands.add_parser(
        "backbones", help="the VLM families and real-size presets irevla supports",
        description="List the backbone kinds and the real-size presets: parameters, bf16 weight memory, native "
                    "image size, latent tokens per camera and width (counted on the meta device: no memory).")
    backbones.add_argument("--json", action="store_true")
    backbones.set_defaults(func=_cmd_policy_backbones)

    snapshot = commands.add_parser(
        "check-snapshot", help="check a downloaded model snapshot loads and encodes (CPU)",
        description="Check a local model snapshot (config.json, safetensors shards + index, tokenizer, processor "
                    "files) the way a policy loads it: every file, the family, the weights against config.json, "
                    "then one image encoded on the CPU. Nothing is downloaded.")
    snapshot.add_argument("directory", help="the snapshot directory (e.g. models/paligemma2-3b-pt-224)")
    snapshot.add_argument("--kind", required=True, help="backbone kind: blip2, paligemma, smolvlm, qwen2_vl, "
                                                        "qwen2_5_vl or qwen3_vl")
    snapshot.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    snapshot.add_argument("--image-size", type=int, default=224,
                          help="backbone.image_size (default 224: BLIP-2's own size, and a multiple of 28 and 32 for "
                               "Qwen; PaliGemma and SmolVLM always use their vision tower's own size)")
    snapshot.set_defaults(func=_cmd_policy_check_snapshot)
    return policy

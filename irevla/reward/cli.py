"""``irevla reward train`` and ``irevla reward eval``: argparse only here; torch loads when a command runs."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  irevla reward train --data runs/demo/expert runs/sft_rollouts --policy runs/demo/sft/policy --out runs/detector
  irevla reward train --data data/teleop data/rl --policy ckpt --out det --positive-frames 5 --target-precision 0.995
  irevla reward eval --model runs/detector --data runs/demo/rl_rollouts

Frame labels: the last --positive-frames frames of successful episodes (and every frame after a rewarded step, the
simulator's per-step success) are successes, the --ignore-before frames before them are left out, everything else
is not; frames a human labelled (episode metadata human_labels, written by the classifier+human reward source) win.
Failed rollouts are the most useful negatives. docs/overnight.md, "An unattended night", walks through it.
"""


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def _cmd_train(args: argparse.Namespace) -> int:
    from irevla.reward.train import train_detector

    train_detector(args.data, args.policy, args.out, task=args.task, positive_frames=args.positive_frames,
                   ignore_before=args.ignore_before, context=args.context,
                   inputs="auto" if args.inputs == "auto" else tuple(args.inputs.split("+")),
                   latent_dims=args.latent_dims, val_fraction=args.val_fraction,
                   target_precision=args.target_precision, confirm_frames=args.confirm_frames, hidden=args.hidden,
                   epochs=args.epochs, seed=args.seed, threads=args.threads, progress=not args.quiet)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from irevla.reward.evaluate import evaluate_detector

    evaluate_detector(args.model, args.data, args.out, policy_dir=args.policy, task=args.task,
                      progress=not args.quiet)
    return 0


def add_reward_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    reward = subparsers.add_parser("reward", help="success detectors for unattended stage 1: train, evaluate",
                                   description="A success detector on the frozen VLM latents of a policy: the "
                                               "reward of stage 1 when nobody labels episodes.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = reward.add_subparsers(dest="reward_command", metavar="ACTION", required=True)
    train = commands.add_parser("train", help="train a detector from episodes",
                                description="Encode every frame once with the policy's frozen VLM, train a small "
                                            "MLP, choose the threshold for the target precision on a validation "
                                            "split (by episode) and write the detector (safetensors + JSON bound to "
                                            "the VLM), report.md, report.json and pr_curve.png into --out.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--data", nargs="+", required=True, metavar="DIR", help="episode directories")
    train.add_argument("--policy", required=True, metavar="CKPT", help="the policy checkpoint whose VLM the "
                                                                       "detector reads (the one stage 1 runs)")
    train.add_argument("--out", required=True, metavar="DIR", help="detector directory (replaced when complete)")
    train.add_argument("--task", help="only episodes of this task (name or full name)")
    train.add_argument("--positive-frames", type=_count(1), default=1,
                       help="last frames of a successful episode labelled success (default 1: simulation ends at "
                            "the success; on the robot, where a person ends it later, 3-10)")
    train.add_argument("--ignore-before", type=_count(0), default=2,
                       help="frames before the first success frame left out as ambiguous (default 2)")
    train.add_argument("--inputs", choices=("auto", "latent", "proprio", "latent+proprio"), default="auto",
                       help="what the detector reads per frame: the frozen VLM's pooled hidden states (latent), the "
                            "proprio vector, or both; auto (default): train each of a few choices and keep the one "
                            "with the best validation average precision (report.md lists them)")
    train.add_argument("--latent-dims", type=_count(0), default=8,
                       help="without auto: principal components of the pooled hidden states kept (8; 0: all)")
    train.add_argument("--context", type=_count(0), default=2,
                       help="without auto: each frame also sees its difference to the last N frames (default 2)")
    train.add_argument("--val-fraction", type=_probability, default=0.25, help="episodes for validation (0.25)")
    train.add_argument("--target-precision", type=_probability, default=0.99,
                       help="precision the threshold must reach on validation frames (default 0.99)")
    train.add_argument("--confirm-frames", type=_count(1), default=2,
                       help="consecutive frames above the threshold before an episode is declared a success (default "
                            "2: on the demo's RL task 1 frame gave 5 false successes per 100 stage-1 episodes, all "
                            "a step or two early; 2 frames gave 0.8, docs/benchmarks.md)")
    train.add_argument("--hidden", type=_count(1), default=64, help="hidden width of the MLP (64)")
    train.add_argument("--epochs", type=_count(1), default=200, help="training epochs (200)")
    train.add_argument("--seed", type=int, default=0, help="split and initialisation seed (0)")
    train.add_argument("--threads", type=_count(1), help="torch CPU threads")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("eval", help="where a detector would have ended episodes",
                                   description="Per episode: the frame at which the detector would have ended it, "
                                               "against the labels; false positives and negatives with frame "
                                               "indices; a contact sheet of the most confident wrong frames. "
                                               "Writes eval.md, eval.json and false_positives.png.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--model", required=True, metavar="DIR", help="detector directory")
    evaluate.add_argument("--data", nargs="+", required=True, metavar="DIR", help="episode directories")
    evaluate.add_argument("--policy", metavar="CKPT", help="policy checkpoint (default: the one it was trained on; "
                                                          "its VLM must be the same)")
    evaluate.add_argument("--out", metavar="DIR", help="where the evaluation goes (default: <model>/eval)")
    evaluate.add_argument("--task", help="only episodes of this task")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_cmd_eval)
    return reward

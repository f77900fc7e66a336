"""`irevla <command>`: the entry point. Thin on purpose: parse arguments, call into the packages, print results.

Errors that a user can fix (a bad config, a corrupt file, an unknown task: every `irevla.errors.UserError`) are printed
as one line on stderr and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from irevla import __version__
from irevla.errors import UserError, one_line

EPILOG = """\
Typical session:
  irevla demo                                   # the simulated demo: the whole iRe-VLA loop on Meta-World
  irevla sim list                               # every simulated task, with its instruction
  irevla sim show --task drawer-open-v3 --variation color:red --out drawer.png
  irevla demos sim --tasks button-press-v3 drawer-open-v3 --episodes 20 --out data/expert
  irevla data info data/expert                  # what is in a dataset
  irevla data check data/expert                 # find corrupt or truncated episode files

`irevla COMMAND --help` explains each command. Docs: README.md and docs/.
"""


# ------------------------------------------------------------------------------------------------------ commands
def _cmd_demo(args: argparse.Namespace) -> int:
    """The simulated demo: the whole iRe-VLA loop on the embedded default (``irevla iterate`` on config/demo.yaml)."""
    from irevla.iterate.cli import _cmd_iterate

    args.set = list(args.set or [])
    return _cmd_iterate(args)


def _check_tasks_and_variation(family: str, tasks: Sequence[str], variation: str, variation_seed: int) -> None:
    """Typos in task names or the variation fail here, in a second and before a progress bar starts."""
    from irevla.sim.registry import make_env_by_name, task_names
    from irevla.sim.variations import parse_variation

    parse_variation(variation, variation_seed)  # VariationError naming the part that is wrong
    known = set(task_names(family))
    for task in tasks:
        if task not in known:  # the family's own UnknownTaskError (with its "did you mean"), or an alias it accepts
            make_env_by_name(family, task, image_size=16).close()


def _cmd_demos_sim(args: argparse.Namespace) -> int:
    from irevla.sim.demos import collect_expert_demos

    _check_tasks_and_variation(args.family, args.tasks, args.variation, args.variation_seed)
    cameras = tuple(args.cameras) if args.cameras else None
    report = collect_expert_demos(
        args.tasks, args.episodes, args.out, family=args.family, image_size=args.image_size, cameras=cameras,
        fast=not args.default_render, seed=args.seed, keep_failures=args.keep_failures,
        action_noise=args.noise, variation=args.variation, variation_seed=args.variation_seed, round=args.round,
        max_episode_steps=args.max_steps, resume=args.resume)
    print(report.format())
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2))
    short = [t.task for t in report.tasks if t.kept < args.episodes]
    if short:
        print(f"warning: fewer than {args.episodes} episodes kept for {short} (expert failed too often)",
              file=sys.stderr)
        return 1
    return 0


def _cmd_sim_list(args: argparse.Namespace) -> int:
    from irevla.sim.registry import FAMILIES, task_names

    for family in [args.family] if args.family else FAMILIES:
        if family == "metaworld":
            from irevla.sim.metaworld import INSTRUCTIONS
        else:
            from irevla.sim.kitchen import INSTRUCTIONS
        print(f"{family}:")
        for name in task_names(family):
            print(f"  {name:32s} {INSTRUCTIONS.get(name, '')}")
    return 0


def _cmd_sim_show(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from irevla.sim.registry import make_env_by_name

    env = make_env_by_name(args.family, args.task, cameras=args.cameras or None, image_size=args.image_size,
                           fast=not args.default_render, variation=args.variation,
                           variation_seed=args.variation_seed)
    try:
        obs, _ = env.reset(seed=args.seed)
        strip = np.concatenate([obs["images"][c] for c in env.task_spec.observation_spec.cameras], axis=1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(strip).save(args.out)
    finally:
        env.close()
    print(f"{env.task_spec.full_name}: '{env.task_spec.instruction}' -> {args.out} "
          f"({', '.join(env.task_spec.observation_spec.cameras)})")
    return 0


# -------------------------------------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _add_render_args(parser: argparse.ArgumentParser, image_size: int) -> None:
    parser.add_argument("--family", default="metaworld", choices=("metaworld", "kitchen"),
                        help="simulation family (default: metaworld)")
    parser.add_argument("--image-size", type=_positive_int, default=image_size, help=f"square image side (default {image_size})")
    parser.add_argument("--cameras", nargs="+", metavar="CAM", help="camera names (default: the family's default)")
    parser.add_argument("--default-render", action="store_true",
                        help="MuJoCo's default quality (MSAA, shadows): ~10x slower on a CPU renderer")
    parser.add_argument("--variation", default="", help="task variation, e.g. color:red or obj:0.25,0,0+scale:1.2 "
                                                        "(see irevla/sim/variations.py)")
    parser.add_argument("--variation-seed", type=int, default=0, help="seed for random variations (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irevla", description="iRe-VLA: improve a vision-language-action policy with online RL.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"irevla {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="run the simulated demo: the whole iRe-VLA loop (what `make demo` runs)",
                               description="Expert demos -> SFT -> RL on a new task variation -> consolidation -> "
                                           "evaluation of expert, RL and unseen tasks, on Meta-World with a tiny VLA "
                                           "trained on the CPU. Same as `irevla iterate --config config/demo.yaml`; "
                                           "rerun to resume.")
    demo.add_argument("--config", default="config/demo.yaml", help="loop config (default: config/demo.yaml)")
    demo.add_argument("--run-dir", help="override run_dir")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key (repeatable)")
    demo.set_defaults(func=_cmd_demo)

    demos = commands.add_parser("demos", help="record expert demonstrations")
    demos_sub = demos.add_subparsers(dest="demos_command", metavar="SOURCE", required=True)
    sim = demos_sub.add_parser("sim", help="scripted experts in simulation",
                               description="Run each task's scripted expert, render its cameras and write one HDF5 "
                                           "file per episode. Only successful episodes are kept unless "
                                           "--keep-failures; the number of failures is reported.")
    sim.add_argument("--tasks", nargs="+", required=True, metavar="TASK", help="task names (see `irevla sim list`)")
    sim.add_argument("--episodes", type=_positive_int, required=True, help="episodes to keep per task")
    sim.add_argument("--out", required=True, help="output directory (created if missing; episodes are added)")
    sim.add_argument("--seed", type=int, default=0,
                     help="seed of this recording; attempt k resets with a seed derived from (seed, task, k). "
                          "Use another seed to add more episodes to the same --out (default 0)")
    sim.add_argument("--noise", type=_non_negative_float, default=0.0,
                     help="DART noise std on executed actions, as a fraction of each dimension's half-range; the "
                          "clean expert action is stored (default 0)")
    sim.add_argument("--keep-failures", action="store_true", help="also write failed episodes (success=False)")
    sim.add_argument("--resume", action="store_true",
                     help="finish an interrupted recording with the same --seed into the same --out")
    sim.add_argument("--round", type=int, default=0, help="iRe-VLA round recorded in each episode (default 0)")
    sim.add_argument("--max-steps", type=_positive_int, help="episode time limit (default: the task's own)")
    sim.add_argument("--report", help="also write the per-task report as JSON here")
    _add_render_args(sim, 128)
    sim.set_defaults(func=_cmd_demos_sim)

    from irevla.data.cli import add_data_parser  # argparse only; pyarrow/PyAV/rosbags/rerun load when run

    add_data_parser(commands)

    simcmd = commands.add_parser("sim", help="simulated tasks: list them, look at them")
    sim_sub = simcmd.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    listing = sim_sub.add_parser("list", help="list task names and instructions")
    listing.add_argument("--family", choices=("metaworld", "kitchen"))
    listing.set_defaults(func=_cmd_sim_list)
    show = sim_sub.add_parser("show", help="render a task's cameras after reset to a PNG")
    show.add_argument("--task", required=True)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", default="task.png", help="PNG path (default task.png)")
    _add_render_args(show, 224)
    show.set_defaults(func=_cmd_sim_show)

    from irevla.calibration.cli import add_calibrate_parser  # argparse only; OpenCV is imported when it runs

    def ros_calibration_sources():  # the robot's rclpy edge; calibration sits below it and is handed it here
        from irevla.robot import calibration_sources

        return calibration_sources

    add_calibrate_parser(commands, ros_sources=ros_calibration_sources)

    from irevla.policy.cli import add_policy_parser, add_sft_parser  # argparse only; torch loads when it runs

    add_sft_parser(commands)
    add_policy_parser(commands)

    from irevla.reward.cli import add_reward_parser  # argparse only; torch loads when it runs

    add_reward_parser(commands)

    from irevla.iterate.cli import add_iterate_parser, add_learner_parser  # argparse only; torch/jax load when run

    add_iterate_parser(commands)
    add_learner_parser(commands)

    from irevla.robot.cli import add_robot_parser  # argparse only; rclpy is imported when a command runs

    add_robot_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"irevla: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("irevla: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

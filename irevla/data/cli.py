"""``irevla data ...``: look at, check, convert and view episode datasets.

``info`` and ``check`` summarise and validate irevla's own HDF5 episodes; ``export`` and ``import`` move them to and
from LeRobotDataset v3 and rosbag2; ``view`` shows an episode (rerun, a PNG contact sheet, an MP4). Each converter and
viewer module owns its arguments (``add_*_arguments``) and its command (``run_*``), so this file only wires them in;
those modules import nothing heavy (pyarrow, PyAV, rosbags, rerun) until a command runs.
"""

from __future__ import annotations

import argparse

DATA_EPILOG = """\
examples:
  irevla data info data/expert                                  # episodes per task, successes, steps, sources
  irevla data check data/expert                                 # every corrupt or truncated episode file
  irevla data export --format lerobot data/expert out/expert_lerobot
  irevla data import lerobot ~/datasets/my_lerobot_dataset data/from_lerobot
  irevla data import rosbag bags/session_01 data/from_bag --map config/rosbag_topics.yaml
  irevla data view data/expert --save expert.rrd                # rerun recording; --sheet / --mp4 without rerun
"""


def _cmd_check(args: argparse.Namespace) -> int:
    from irevla.data.store import check_directories

    n_ok, problems = check_directories(args.dirs, progress=True)
    for path, problem in problems:
        print(f"BAD  {path}: {problem}")
    print(f"{n_ok} episode file(s) OK, {len(problems)} bad")
    return 1 if problems else 0


def _cmd_info(args: argparse.Namespace) -> int:
    from irevla.data.store import format_summary

    print(format_summary(args.dirs))
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``irevla data`` (info, check, export, import, view) to the main parser's subcommands."""
    from irevla.data import lerobot, rosbag, view

    data = subparsers.add_parser("data", help="inspect, check, convert (LeRobot, rosbag2) and view episode datasets",
                                 description=__doc__.split("\n\n")[1].replace("\n", " "), epilog=DATA_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_sub.add_parser("check", help="validate every episode file; report all bad ones",
                                description="Open and validate every episode file (schema, keys, dtypes, shapes). "
                                            "Reports all bad files; exits 1 if any.")
    check.add_argument("dirs", nargs="+", metavar="DIR")
    check.set_defaults(func=_cmd_check)
    info = data_sub.add_parser("info", help="summary: episodes per task, successes, steps, sources, size")
    info.add_argument("dirs", nargs="+", metavar="DIR")
    info.set_defaults(func=_cmd_info)

    export = data_sub.add_parser("export", help="write irevla episodes as a LeRobotDataset v3",
                                 description=lerobot.EXPORT_DESCRIPTION, epilog=lerobot.EXPORT_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    lerobot.add_export_arguments(export)
    export.set_defaults(func=lerobot.run_export)

    importer = data_sub.add_parser("import", help="turn a LeRobotDataset v3 or a rosbag2 into irevla episodes")
    import_sub = importer.add_subparsers(dest="import_format", metavar="FORMAT", required=True)
    from_lerobot = import_sub.add_parser("lerobot", help="a LeRobotDataset v3 directory -> irevla episodes",
                                         description=lerobot.IMPORT_DESCRIPTION,
                                         epilog=lerobot.IMPORT_EPILOG,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    lerobot.add_import_arguments(from_lerobot)
    from_lerobot.set_defaults(func=lerobot.run_import)
    from_rosbag = import_sub.add_parser("rosbag", help="a rosbag2 (MCAP or sqlite3) -> irevla episodes",
                                        description=rosbag.IMPORT_DESCRIPTION, epilog=rosbag.IMPORT_EPILOG,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    rosbag.add_import_arguments(from_rosbag)
    from_rosbag.set_defaults(func=rosbag.run_import)

    viewer = data_sub.add_parser("view", help="look at episodes: rerun viewer / .rrd, PNG contact sheet, MP4",
                                 description=view.DESCRIPTION, epilog=view.EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    view.add_arguments(viewer)
    viewer.set_defaults(func=view.run)
    return data

"""What `ros2 launch --noninteractive FILE name:=value ...` runs: ROS 2's LaunchService on one launch file.

``python launch_driver.py FILE [name:=value ...]``; exits with LaunchService.run()'s code. SIGINT (what a terminal's
ctrl-c or a supervisor sends) shuts the launch down: noninteractive, launch forwards it to every node at once instead
of assuming the terminal's process group got it. A process started in the background by a non-interactive shell
inherits SIGINT as ignored, and launch only sees signals that have a Python handler: restore the default one.
"""

import signal
import sys

from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource

from launch import LaunchDescription, LaunchService


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path, arguments = argv[0], [tuple(argument.split(":=", 1)) for argument in argv[1:]]
    service = LaunchService(argv=argv[1:], noninteractive=True)
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=arguments)]))
    return service.run()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""`irevla calibrate ...`: board, intrinsics, handeye, workspace. Parses arguments, calls the package, prints.

irevla/cli.py wires it in with ``add_calibrate_parser(subparsers)``; each subcommand's handler is stored as
``args.func`` and returns the exit status (0 ok, 2 an error the user can fix: bad arguments, a bad config or file,
unusable calibration input). ``python -m irevla.calibration.cli`` runs it on its own. Errors are one line naming the
file/sample and the problem; result files are written atomically and only on success.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irevla.calibration.errors import CalibrationError
from irevla.errors import UserError, one_line

HANDEYE_EPILOG = """\
examples:
  # wrist camera (RealSense on the hand), poses from franka_ros2, images straight from pyrealsense2
  irevla calibrate handeye --mode eye-in-hand --image-source realsense --name wrist_camera
  # fixed camera watching the robot, images from the realsense-ros node
  irevla calibrate handeye --mode eye-on-base --image-source ros --name fixed_camera \\
      --camera-frame fixed_camera_color_optical_frame --image-topic /fixed_camera/camera/color/image_raw \\
      --camera-info-topic /fixed_camera/camera/color/camera_info
  # solve again offline from the saved samples (e.g. after deleting a bad one)
  irevla calibrate handeye --from runs/calibration/wrist_camera
  # rehearse the whole procedure without hardware
  irevla calibrate handeye --mode eye-in-hand --simulate --samples-dir /tmp/rehearsal
"""

WORKSPACE_EPILOG = """\
examples:
  irevla calibrate workspace                       # move the arm to the corners (poses from ROS 2)
  irevla calibrate workspace --limits 0.30 -0.30 0.02 0.75 0.30 0.55 --margin 0.0
"""


# ----------------------------------------------------------------------------------------------- parser
def add_calibrate_parser(subparsers: Any, ros_sources: Callable[[], Any] | None = None) -> argparse.ArgumentParser:
    """Add `calibrate` (with board, intrinsics, handeye, workspace) to an argparse subparsers object.

    `ros_sources` returns the module with the ROS 2 pose/image sources (``irevla.robot.calibration_sources``): the
    calibration package stays below the robot layer, so the caller that may import the robot (irevla/cli.py) hands
    them in; without it ``--pose-source ros`` / ``--image-source ros`` is a clear error.
    """
    calibrate = subparsers.add_parser(
        "calibrate", help="camera intrinsics, hand-eye and workspace calibration",
        description="Calibrate cameras and the robot workspace. See docs/calibration.md for the full walk-through.")
    calibrate.set_defaults(func=lambda args: _usage(calibrate), ros_sources=ros_sources)
    commands = calibrate.add_subparsers(dest="calibrate_command", metavar="{board,intrinsics,handeye,workspace}")

    board = commands.add_parser("board", help="write a printable ChArUco board image",
                                description="Write the configured ChArUco board as a PNG for printing at 100 % "
                                            "scale. Measure the printed square afterwards and put the real size in "
                                            "the config (board.square_length / marker_length).")
    _add_config_argument(board)
    board.add_argument("--out", type=Path, default=Path("charuco_board.png"),
                       help="PNG to write (default: %(default)s)")
    board.add_argument("--dpi", type=int, default=300, help="print resolution (default: %(default)s)")
    board.set_defaults(func=_run_board)

    intrinsics = commands.add_parser(
        "intrinsics", help="camera intrinsics: RealSense factory values or ChArUco calibration from images",
        description="Either read the factory intrinsics of every stream profile of a connected RealSense "
                    "(--realsense), or calibrate any camera from a folder of ChArUco board images (--images): "
                    "15-30 sharp images, board at different distances, tilted up to ~45 deg, covering the corners "
                    "of the picture. Images with a much larger reprojection error than the rest are rejected.")
    source = intrinsics.add_mutually_exclusive_group(required=True)
    source.add_argument("--realsense", action="store_true", help="read factory intrinsics with pyrealsense2")
    source.add_argument("--images", type=Path, metavar="DIR", help="folder of board images to calibrate from")
    intrinsics.add_argument("--serial", help="RealSense serial number (when several are connected)")
    intrinsics.add_argument("--out", type=Path, default=Path("config/calibration_intrinsics.yaml"),
                            help="intrinsics YAML to write (default: %(default)s)")
    intrinsics.add_argument("--camera-info-out", type=Path, metavar="FILE",
                            help="also write a ROS camera_info YAML (camera_calibration_parsers format) for the "
                                 "calibrated stream (--images only)")
    intrinsics.add_argument("--camera-name", default="camera", help="camera name stored in the files")
    intrinsics.add_argument("--stream", default="color", help="stream name for --images (default: %(default)s)")
    intrinsics.add_argument("--min-images", type=int, default=8, help="fewer usable images is an error")
    intrinsics.add_argument("--estimate-k3", action="store_true",
                            help="also fit the 3rd radial coefficient (wide-angle lenses; needs many images)")
    _add_config_argument(intrinsics)
    intrinsics.set_defaults(func=_run_intrinsics)

    handeye = commands.add_parser(
        "handeye", help="hand-eye calibration (eye-in-hand or eye-on-base) with a ChArUco board",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HANDEYE_EPILOG,
        description="Collect samples (robot pose + camera image) at the robot, or solve from saved samples "
                    "(--from DIR). Every sample is saved as PNG + JSON so a solve can be repeated offline. "
                    "eye-in-hand: camera on the gripper, board fixed on the table -> camera pose in the effector "
                    "frame. eye-on-base: camera fixed, board fixed to the gripper -> camera pose in the base frame.")
    handeye.add_argument("--mode", choices=("eye-in-hand", "eye-on-base"),
                         help="where the camera is (required unless --from)")
    handeye.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                         help="solve from the samples saved in DIR instead of collecting")
    handeye.add_argument("--samples-dir", type=Path, metavar="DIR",
                         help="where collected samples go (default: runs/calibration/<name>); an existing session "
                              "with the same mode and camera is continued")
    handeye.add_argument("--name", help="calibration name (default: wrist_camera / fixed_camera by mode)")
    handeye.add_argument("--out", type=Path, help="result YAML (default: config/calibration_<name>.yaml)")
    handeye.add_argument("--easy-handeye2-out", type=Path, metavar="FILE",
                         help="also write the bare easy_handeye2 .calib form (parameters + transform only)")
    handeye.add_argument("--pose-source", choices=("ros", "manual"), default="ros",
                         help="ros: subscribe to the pose topic; manual: type each pose (default: %(default)s)")
    handeye.add_argument("--image-source", choices=("ros", "realsense"), default="ros",
                         help="ros: image + camera_info topics; realsense: pyrealsense2 directly "
                              "(default: %(default)s)")
    handeye.add_argument("--simulate", action="store_true",
                         help="rehearse with a simulated robot and camera (known ground truth, no hardware)")
    handeye.add_argument("--intrinsics", type=Path, metavar="FILE",
                         help="intrinsics YAML (from `irevla calibrate intrinsics`); default: the camera's own "
                              "(RealSense factory values or camera_info)")
    handeye.add_argument("--stream", default="color", help="stream to pick from --intrinsics (default: %(default)s)")
    handeye.add_argument("--width", type=int, default=640, help="image width (RealSense profile, --intrinsics pick)")
    handeye.add_argument("--height", type=int, default=480, help="image height")
    handeye.add_argument("--fps", type=int, default=30, help="RealSense frame rate (default: %(default)s)")
    handeye.add_argument("--serial", help="RealSense serial number (recorded in the result)")
    handeye.add_argument("--samples", type=int, help="how many samples to aim for (default: config target_samples)")
    handeye.add_argument("--no-refine", action="store_true",
                         help="keep the best closed-form OpenCV result, skip the bundle-adjustment refinement")
    handeye.add_argument("--skip-bad-samples", action="store_true",
                         help="skip corrupt or incomplete sample files with a warning instead of stopping")
    frames = handeye.add_argument_group("frames and topics (override the config)")
    frames.add_argument("--base-frame", help="robot base frame (default fr3_link0)")
    frames.add_argument("--effector-frame", help="frame the pose topic reports (default fr3_hand_tcp)")
    frames.add_argument("--camera-frame", help="camera optical frame (default camera_color_optical_frame)")
    frames.add_argument("--board-frame", help="name for the board frame (default charuco_board)")
    frames.add_argument("--pose-topic", help="geometry_msgs/PoseStamped topic of the end effector")
    frames.add_argument("--image-topic", help="sensor_msgs/Image topic")
    frames.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo topic")
    _add_config_argument(handeye)
    handeye.set_defaults(func=_run_handeye)

    workspace = commands.add_parser(
        "workspace", help="record the workspace box the safety filter enforces",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=WORKSPACE_EPILOG,
        description="Record the axis-aligned box (robot base frame) the end effector must stay in: move the arm "
                    "to the corners of the safe region in guiding mode, or type the limits. The box is shrunk by "
                    "--margin on every side and written atomically to --out.")
    limits = workspace.add_mutually_exclusive_group()
    limits.add_argument("--limits", type=float, nargs=6, metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
                        help="type the limits (metres) instead of recording corners")
    limits.add_argument("--pose-source", choices=("ros", "manual"), default="ros",
                        help="where corner poses come from (default: %(default)s)")
    workspace.add_argument("--margin", type=float, help="metres to shrink the box by on each side "
                                                        "(default: config workspace_margin, 0.02)")
    workspace.add_argument("--max-tilt", type=float, metavar="RAD",
                           help="orientation limit: the tool axis stays within this angle of the nominal's (rad; "
                                "default: the safety config's, 1.0)")
    workspace.add_argument("--yaw", type=float, nargs=2, metavar=("MIN", "MAX"),
                           help="orientation limit: rotation about the tool axis relative to the nominal (rad)")
    workspace.add_argument("--nominal", type=float, nargs=4, metavar=("QX", "QY", "QZ", "QW"),
                           help="nominal tool orientation, base frame (default: pointing down, 1 0 0 0)")
    workspace.add_argument("--frame", help="base frame of the limits (default: config frames.robot_base_frame)")
    workspace.add_argument("--pose-topic", help="pose topic (default: config ros.pose_topic)")
    workspace.add_argument("--out", type=Path, default=Path("config/workspace.yaml"),
                           help="YAML to write (default: %(default)s)")
    _add_config_argument(workspace)
    workspace.set_defaults(func=_run_workspace)
    return calibrate


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="calibration config YAML (board, frames, topics, noise); default: built-in values, "
                             "the same as config/calibration.yaml")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------- handlers
def _run_guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a user error (CalibrationError, ConfigError, a missing file) into one line + exit 2, and print warnings
    as they come."""

    def run(args: argparse.Namespace) -> int:
        def show(message, category, filename, lineno, file=None, line=None):
            print(f"warning: {message}", file=sys.stderr)

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            try:
                return handler(args)
            except UserError as exc:
                print(f"irevla: error: {one_line(exc)}; nothing was written", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print("\ninterrupted; nothing was written (samples saved so far are kept).", file=sys.stderr)
                return 130

    run.__name__ = handler.__name__
    return run


@_run_guarded
def _run_board(args: argparse.Namespace) -> int:
    import cv2

    from irevla.atomic_io import atomic_write_bytes
    from irevla.calibration.board import render_printable_board
    from irevla.calibration.config import load_calibration_config

    board = load_calibration_config(args.config).board
    image = render_printable_board(board, dots_per_inch=args.dpi)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise CalibrationError(f"{args.out}: could not encode the board image")
    atomic_write_bytes(args.out, png.tobytes())
    width, height = board.size_m
    print(f"wrote {args.out}: {board.squares_x}x{board.squares_y} squares of {board.square_length * 1000:.1f} mm, "
          f"markers {board.marker_length * 1000:.1f} mm, {board.dictionary}; pattern {width * 1000:.0f} x "
          f"{height * 1000:.0f} mm.")
    print("Print at 100 % (no 'fit to page'), glue it flat on a rigid plate, then measure one square with a caliper "
          "and put the measured size in your calibration config.")
    return 0


@_run_guarded
def _run_intrinsics(args: argparse.Namespace) -> int:
    from irevla.calibration.camera_model import (
        IntrinsicsFile,
        camera_info_yaml,
        now_iso,
        write_intrinsics_file,
    )

    if args.realsense:
        from irevla.calibration.realsense import factory_intrinsics, find_device

        if args.camera_info_out:
            raise CalibrationError("--camera-info-out applies to --images; realsense-ros already publishes "
                                   "camera_info from the factory values")
        result = factory_intrinsics(find_device(args.serial))
        print(f"{result.camera_name} (serial {result.camera_serial}): factory intrinsics of "
              f"{len(result.streams)} stream profiles")
        for stream in result.streams:
            print(f"  {stream.profile_name:22s} fx {stream.fx:8.2f} fy {stream.fy:8.2f} cx {stream.cx:7.2f} "
                  f"cy {stream.cy:7.2f}  {stream.realsense_model}")
        write_intrinsics_file(args.out, result)
        print(f"wrote {args.out}")
        return 0

    from irevla.atomic_io import atomic_write_text
    from irevla.calibration.config import load_calibration_config
    from irevla.calibration.intrinsics import calibrate_intrinsics, load_images

    board = load_calibration_config(args.config).board
    images = load_images(args.images)
    print(f"calibrating from {len(images)} images in {args.images} ({board.squares_x}x{board.squares_y} board)...")
    calibration = calibrate_intrinsics(images, board, stream=args.stream, min_images=args.min_images,
                                       estimate_k3=args.estimate_k3)
    for report in calibration.images:
        error = f"{report.rms_px:.3f} px" if report.rms_px is not None else "-"
        print(f"  {report.name:30s} {report.status:9s} corners {report.corners:3d}  error {error}"
              + (f"  ({report.reason})" if report.reason else ""))
    found = calibration.intrinsics
    print(f"RMS reprojection error {calibration.rms_px:.3f} px over {len(calibration.used)} images")
    print(f"fx {found.fx:.2f}  fy {found.fy:.2f}  cx {found.cx:.2f}  cy {found.cy:.2f}  distortion "
          + " ".join(f"{v:+.4f}" for v in found.distortion_coefficients))
    result = IntrinsicsFile(camera_name=args.camera_name, camera_serial=args.serial or "", source="charuco",
                            date=now_iso(), streams=(found,), calibration_report=calibration.report_dict())
    write_intrinsics_file(args.out, result)
    print(f"wrote {args.out}")
    if args.camera_info_out:
        atomic_write_text(args.camera_info_out, camera_info_yaml(found, args.camera_name))
        print(f"wrote {args.camera_info_out}")
    return 0


@_run_guarded
def _run_handeye(args: argparse.Namespace) -> int:
    from irevla.calibration.config import load_calibration_config

    config = load_calibration_config(args.config)
    if args.from_dir is not None:
        _solve_and_write(args, args.from_dir, config.min_samples)
        return 0
    if args.mode is None:
        raise CalibrationError("--mode eye-in-hand|eye-on-base is required when collecting (or use --from DIR)")
    name = args.name or ("wrist_camera" if args.mode == "eye-in-hand" else "fixed_camera")
    samples_dir = args.samples_dir or Path("runs/calibration") / name
    rig = _collect(args, config, name, samples_dir)
    found = _solve_and_write(args, samples_dir, config.min_samples, default_name=name)
    if rig is not None:
        from irevla.calibration.transforms import rotation_angle_deg

        error_mm = 1000.0 * float(np.linalg.norm(found[:3, 3] - rig.true_hand_eye[:3, 3]))
        error_deg = rotation_angle_deg(found[:3, :3], rig.true_hand_eye[:3, :3])
        print(f"SIMULATION: error against the true transform: {error_mm:.2f} mm, {error_deg:.3f} deg")
    return 0


def _collect(args: argparse.Namespace, config: Any, name: str, samples_dir: Path) -> Any:
    """Run the guided collection; returns the simulated rig (for its ground truth) when --simulate, else None."""
    from irevla.calibration.camera_model import load_intrinsics
    from irevla.calibration.collect import collect_hand_eye_samples
    from irevla.calibration.samples import HandEyeSession, SampleStore

    frames = config.frames.model_copy(update={k: v for k, v in {
        "robot_base_frame": args.base_frame, "robot_effector_frame": args.effector_frame,
        "camera_frame": args.camera_frame, "board_frame": args.board_frame}.items() if v})
    ros = config.ros.model_copy(update={k: v for k, v in {
        "pose_topic": args.pose_topic, "image_topic": args.image_topic,
        "camera_info_topic": args.camera_info_topic}.items() if v})
    closers: list[Callable[[], None]] = []
    read_line: Callable[[str], str] | None = None  # None: the console
    rig = None
    try:
        if args.simulate:
            from irevla.calibration.synthetic import SimulatedRig

            rig = SimulatedRig(args.mode, config.board)
            pose_source, image_source = rig.pose_source(), rig.image_source()

            def read_line(prompt: str) -> str:
                answer = input(prompt)
                if not answer.strip():
                    rig.advance()  # the simulated arm moves to a new pose for every capture
                return answer

            print("SIMULATION: every Enter moves a simulated arm to a new pose; the true transform is known.")
        else:
            pose_source, image_source = _open_sources(args, ros, closers)
        if args.intrinsics is not None:
            intrinsics = load_intrinsics(args.intrinsics, args.stream, args.width, args.height)
        else:
            intrinsics = image_source.intrinsics()
            if intrinsics is None:
                raise CalibrationError("the camera did not report intrinsics (no camera_info received); pass "
                                       "--intrinsics FILE from `irevla calibrate intrinsics`")
        print(f"camera intrinsics: {intrinsics.profile_name} fx {intrinsics.fx:.1f} fy {intrinsics.fy:.1f} "
              f"cx {intrinsics.cx:.1f} cy {intrinsics.cy:.1f}")
        session = HandEyeSession(mode=args.mode, name=name, board=config.board, intrinsics=intrinsics,
                                 frames=frames, noise=config.noise,
                                 camera_serial=args.serial or getattr(image_source, "serial", "") or "")
        store = SampleStore.create(samples_dir, session)
        collect_hand_eye_samples(store, pose_source, image_source, args.samples or config.target_samples,
                                 read_line=read_line)
    finally:
        for close in reversed(closers):
            close()
    return rig


def _ros_sources(args: argparse.Namespace) -> Any:
    """The ROS 2 sources module the caller handed to `add_calibrate_parser` (rclpy loads here, not before)."""
    loader = getattr(args, "ros_sources", None)
    if loader is None:
        raise CalibrationError("ROS 2 pose/image sources are only available through `irevla calibrate` (they live "
                               "at the robot's edge, irevla.robot.calibration_sources); use --pose-source manual / "
                               "--image-source realsense here")
    return loader()


def _open_sources(args: argparse.Namespace, ros: Any, closers: list[Callable[[], None]]) -> tuple[Any, Any]:
    from irevla.calibration.sources import ManualPoseSource

    connection = None
    if args.pose_source == "ros" or args.image_source == "ros":
        ros_sources = _ros_sources(args)
        connection = ros_sources.Ros2Connection()
        closers.append(connection.close)
    if args.pose_source == "ros":
        pose_source = ros_sources.Ros2PoseSource(connection, ros.pose_topic, ros.timeout_s)
    else:
        pose_source = ManualPoseSource()
    if args.image_source == "ros":
        image_source = ros_sources.Ros2ImageSource(connection, ros.image_topic, ros.camera_info_topic,
                                                   ros.timeout_s, serial=args.serial or "")
    else:
        from irevla.calibration.realsense import RealSenseImageSource

        image_source = RealSenseImageSource(args.serial, args.width, args.height, args.fps, timeout_s=ros.timeout_s)
        closers.append(image_source.close)
    return pose_source, image_source


def _solve_and_write(args: argparse.Namespace, samples_dir: Path, min_samples: int,
                     default_name: str | None = None) -> np.ndarray:
    """Solve, print the report, write the result; returns the transform as written (read back from the file)."""
    from irevla.atomic_io import atomic_write_text
    from irevla.calibration.pipeline import solve_from_directory
    from irevla.calibration.result import (
        easy_handeye2_yaml,
        load_hand_eye_calibration,
        write_hand_eye_result,
    )

    print(f"\nsolving from {samples_dir} ...")
    try:
        run = solve_from_directory(samples_dir, skip_bad_samples=args.skip_bad_samples, refine=not args.no_refine,
                                   min_samples=min_samples)
    except CalibrationError as exc:
        if args.from_dir is None:
            raise CalibrationError(f"{exc}\n(the samples are kept in {samples_dir}: run the same command to add "
                                   f"more, or solve later with --from {samples_dir})") from None
        raise
    if args.mode and args.mode != run.session.mode:
        raise CalibrationError(f"{samples_dir}: the samples were recorded for {run.session.mode}, not {args.mode}")
    name = args.name or run.session.name or default_name or ("wrist_camera" if run.session.mode == "eye-in-hand"
                                                             else "fixed_camera")
    _print_solution(run)
    out = args.out or Path(f"config/calibration_{name}.yaml")
    write_hand_eye_result(out, run, name)
    print(f"\nwrote {out}")
    if args.easy_handeye2_out:
        atomic_write_text(args.easy_handeye2_out, easy_handeye2_yaml(out))
        print(f"wrote {args.easy_handeye2_out} (easy_handeye2 .calib form)")
    calibration = load_hand_eye_calibration(out)
    print("publish it for TF (until the launch files do it from this file):\n  ros2 run tf2_ros "
          "static_transform_publisher " + " ".join(calibration.static_transform_publisher_arguments()))
    return calibration.T_parent_child


def _print_solution(run: Any) -> None:
    from irevla.calibration.transforms import to_translation_quaternion

    solution = run.solution
    frames = run.session.frames
    print(f"{len(solution.sample_names)} samples used" + (f", {len(run.skipped)} skipped" if run.skipped else ""))
    print("method       rotation rms   translation rms   (consistency of the board pose across samples)")
    for method, candidate in sorted(solution.methods.items(), key=lambda item: item[1].score):
        print(f"  {method:11s} {candidate.rotation_rms_deg:8.3f} deg   {candidate.translation_rms_mm:8.2f} mm")
    for method, reason in solution.failed_methods.items():
        print(f"  {method:11s} failed: {reason}")
    best = solution.best
    print(f"chosen: {best.method}  (rotation rms {best.rotation_rms_deg:.3f} deg, max {best.rotation_max_deg:.3f}; "
          f"translation rms {best.translation_rms_mm:.2f} mm, max {best.translation_max_mm:.2f})")
    print("per sample:        rotation   translation" + ("   reprojection  robot correction"
                                                        if solution.refinement else ""))
    for index, residual in enumerate(best.residuals):
        line = f"  {residual.name:15s} {residual.rotation_deg:7.3f} deg {residual.translation_mm:8.2f} mm"
        refinement = solution.refinement
        if refinement:
            pixels = refinement.reprojection_rms_px[index]
            moved_mm, moved_deg = refinement.robot_correction_mm[index], refinement.robot_correction_deg[index]
            line += f"   {pixels:7.2f} px   {moved_mm:5.2f} mm {moved_deg:5.3f} deg"
        print(line)
    translation, quaternion = to_translation_quaternion(solution.transform)
    parent = frames.robot_effector_frame if run.session.mode == "eye-in-hand" else frames.robot_base_frame
    print(f"{parent} -> {frames.camera_frame}: translation [{', '.join(f'{v:.4f}' for v in translation)}] m, "
          f"quaternion xyzw [{', '.join(f'{v:.5f}' for v in quaternion)}]")


@_run_guarded
def _run_workspace(args: argparse.Namespace) -> int:
    from irevla.calibration.config import load_calibration_config
    from irevla.calibration.workspace import (
        box_from_limits,
        box_from_points,
        with_orientation_limits,
        write_workspace_box,
    )

    config = load_calibration_config(args.config)
    margin = config.workspace_margin if args.margin is None else args.margin
    frame = args.frame or config.frames.robot_base_frame
    if args.limits is not None:
        box = box_from_limits(args.limits[:3], args.limits[3:], margin, frame)
    else:
        from irevla.calibration.collect import record_workspace_points

        closers: list[Callable[[], None]] = []
        try:
            if args.pose_source == "ros":
                ros_sources = _ros_sources(args)
                connection = ros_sources.Ros2Connection()
                closers.append(connection.close)
                pose_source: Any = ros_sources.Ros2PoseSource(connection, args.pose_topic or config.ros.pose_topic,
                                                              config.ros.timeout_s)
            else:
                from irevla.calibration.sources import ManualPoseSource

                pose_source = ManualPoseSource()
            points = record_workspace_points(pose_source)
        finally:
            for close in closers:
                close()
        box = box_from_points(points, margin, frame)
    if args.max_tilt is not None or args.yaw is not None or args.nominal is not None:
        if args.max_tilt is None:
            raise CalibrationError("--yaw / --nominal need --max-tilt (rad; 3.1416 for no cone)")
        box = with_orientation_limits(box, args.max_tilt, args.yaw, args.nominal)
    write_workspace_box(args.out, box)
    print(f"workspace box in {box.frame} (after a {box.margin:.3f} m margin): "
          f"x {box.min[0]:+.3f}..{box.max[0]:+.3f}  y {box.min[1]:+.3f}..{box.max[1]:+.3f}  "
          f"z {box.min[2]:+.3f}..{box.max[2]:+.3f} m")
    if box.max_tilt is not None:
        yaw = "" if box.yaw_min is None else f", yaw {box.yaw_min:+.3f}..{box.yaw_max:+.3f} rad"
        print(f"orientation limits: tilt <= {box.max_tilt:.3f} rad{yaw} around "
              f"{list(box.orientation_nominal) if box.orientation_nominal else 'the safety config nominal'}")
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------- standalone
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="irevla")
    add_calibrate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

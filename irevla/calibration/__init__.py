"""Calibration: camera intrinsics, hand-eye (eye-in-hand and eye-on-base) with a ChArUco board, workspace box.

The package is ROS-free: the ROS 2 pose/image sources are `irevla.robot.calibration_sources` (the robot's rclpy edge),
which the CLI imports only for ``--pose-source ros`` / ``--image-source ros``; pyrealsense2 is imported only by the
source that needs it.

Where to look:
  board              ChArUco board config, corner detection, board pose (solvePnP)
  camera_model       CameraIntrinsics and the intrinsics YAML file
  intrinsics         ChArUco intrinsic calibration with per-image errors and outlier rejection
  realsense          factory intrinsics of every RealSense profile; pyrealsense2 image source
  handeye            OpenCV's five hand-eye methods, consistency residuals, choice of the best
  refinement         bundle-adjustment polish of the chosen hand-eye transform
  rotation_coverage  is there enough rotation? which rotations are missing?
  samples            the sample folder (session.yaml + PNG + JSON per sample)
  pipeline           sample folder -> detections -> hand-eye solution
  result             the result YAML (easy_handeye2-compatible fields) and its loader for the robot stack
  workspace          the workspace box for the safety filter
  sources            pose/image source interfaces, typed poses (the ROS 2 ones: irevla.robot.calibration_sources)
  collect            guided collection loops; cli: `irevla calibrate ...`
  synthetic          rendered board images with ground truth (tests, --simulate rehearsals)

Consumers: `result.load_hand_eye_calibration(path)` (camera TF, static transform publisher arguments) and
`workspace.load_workspace_box(path)` (safety filter).
"""

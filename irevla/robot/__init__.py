"""The ROS 2 robot stack: thin rclpy nodes over ROS-free cores (docs/robot.md).

Cores (no rclpy; unit-tested on their own):

* `safety`, `watchdog`, `control` -- the safety filter, the stale-command watchdog, franka_control's modes and homing
* `sim_runner`    -- the MuJoCo Panda (`irevla.sim.panda`) in real time, in a child process
* `realsense`     -- pyrealsense2 capture with stamps and reconnects
* `policy_runner` -- the one door to the VLA (irevla.policy); `rl_actor` -- the RL actor's seam
* `teleop`, `keyboard` -- SpaceMouse over raw HID, keyboard, intervention detection
* `recorder`      -- episodes into the episode store, rosbag2 export
* `conversions`, `config`, `params` -- messages <-> numpy, typed settings, parameter files (poses and rotations:
  `irevla.rotations`)

The rclpy edge: `nodes/` (one console script each), `backends/` (sim, franka_ros2, multipanda), `ros_edge`,
`env` (the robot as a gymnasium env over the topics) and `cli` (``irevla robot``). Nothing outside this package
imports it except the CLI and `irevla iterate` with ``family: robot`` (`irevla.iterate.config` reads the
rclpy-free `config.RobotEnvConfig`; `irevla.iterate.envs` imports `env` only when a robot run builds it).
"""

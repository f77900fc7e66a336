"""Typed settings of every robot node, validated by pydantic; config/<node>.yaml holds the same defaults.

Each node has one model (`FrankaControlConfig`, `SimRobotConfig`, `RealSenseCameraConfig`, `VLAPolicyConfig`,
`TeleopConfig`, `RecorderConfig`) made of small sections. A node declares one ROS parameter per leaf, named by its
dotted path (``safety.max_translation_per_step``), with the model's default, so ``ros2 param list`` shows every
knob and a launch file's YAML (``/**: ros__parameters:`` with nested keys) overrides any of them. The defaults
here and the values in ``config/*.yaml`` are the same; a test keeps them so.

Topic and service names shared by several nodes live in `TopicsConfig`; every node that needs them carries the
same section, so renaming a topic is a change in one YAML file per node (or a launch-file remap).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from irevla.config import ConfigModel

Vector3 = tuple[float, float, float]
Quaternion = tuple[float, float, float, float]

# Franka's "ready" pose expressed as an end-effector pose: 45 cm in front of the base, 35 cm up, pointing down
# (x y z w = rotation by pi about x: the gripper's z axis points at the table).
HOME_POSITION: Vector3 = (0.45, 0.0, 0.35)
HOME_ORIENTATION: Quaternion = (1.0, 0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------------------- shared names
class TopicsConfig(ConfigModel):
    """Names of the irevla topics and services (the franka/realsense ones are in the backend sections)."""

    action: str = Field(default="/irevla/action", description="sensor_msgs/JointState: action commands (delta or "
                                                              "absolute pose + gripper, see conversions.py)")
    target_pose: str = Field(default="/irevla/target_pose", description="geometry_msgs/PoseStamped: absolute EE "
                                                                        "target (gripper unchanged)")
    robot_state: str = Field(default="/irevla/robot/state", description="sensor_msgs/JointState: proprio in "
                                                                        "irevla.spec.REAL_ROBOT_PROPRIO order")
    ee_pose: str = Field(default="/irevla/robot/ee_pose", description="geometry_msgs/PoseStamped: measured EE pose")
    commanded_pose: str = Field(default="/irevla/control/commanded_pose",
                                description="geometry_msgs/PoseStamped: the filtered target sent to the robot")
    control_status: str = Field(default="/irevla/control/status", description="std_msgs/String: JSON status")
    reset_service: str = Field(default="/irevla/control/reset_to_home", description="std_srvs/Trigger")
    recover_service: str = Field(default="/irevla/control/recover", description="std_srvs/Trigger")
    teleop_action: str = Field(default="/irevla/teleop/action", description="sensor_msgs/JointState: human action "
                                                                            "(teleop node output)")
    policy_info: str = Field(default="/irevla/policy/info", description="std_msgs/String: JSON, transient local")
    episode_event: str = Field(default="/irevla/episode/event", description="std_msgs/String: JSON episode "
                                                                            "start/end/success events")


class CamerasConfig(ConfigModel):
    """Which cameras a consumer reads and where: ``names[i]`` is published on ``image_topics[i]``."""

    names: tuple[str, ...] = Field(default=("front", "wrist"), min_length=1)
    image_topics: tuple[str, ...] = Field(default=("/camera/front/color/image_raw", "/camera/wrist/color/image_raw"),
                                          min_length=1, description="sensor_msgs/Image topics, same order as names")
    hand_eye_files: tuple[str, ...] = Field(default=(), description="hand-eye result per camera (`irevla calibrate "
                                            "handeye`), same order as names, '' for none: recorded in episodes")
    depth_topics: tuple[str, ...] = Field(default=(), description="16UC1 depth (mm) aligned to colour per camera, "
                                          "same order as names, '' for none: the recorder stores it in episodes")

    @model_validator(mode="after")
    def _same_length(self) -> CamerasConfig:
        if len(self.names) != len(self.image_topics):
            raise ValueError(f"names ({len(self.names)}) and image_topics ({len(self.image_topics)}) must have the "
                             f"same length: one topic per camera")
        if self.hand_eye_files and len(self.hand_eye_files) != len(self.names):
            raise ValueError(f"hand_eye_files ({len(self.hand_eye_files)}) must be empty or one per camera "
                             f"({len(self.names)}: {list(self.names)}), '' for a camera without one")
        if self.depth_topics and len(self.depth_topics) != len(self.names):
            raise ValueError(f"depth_topics ({len(self.depth_topics)}) must be empty or one per camera "
                             f"({len(self.names)}: {list(self.names)}), '' for a camera without depth")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"camera names must be unique, got {self.names}")
        return self

    def topic_of(self) -> dict[str, str]:
        return dict(zip(self.names, self.image_topics))


# ------------------------------------------------------------------------------------------------------ safety
class SafetyConfig(ConfigModel):
    """The client-side safety layers between any action and any controller (see irevla/robot/safety.py)."""

    workspace_file: str = Field(default="", description="workspace box YAML from `irevla calibrate workspace`; "
                                                        "overrides workspace_min/max when set")
    workspace_min: Vector3 = Field(default=(0.25, -0.35, 0.03), description="box lower corner x y z (m, base)")
    workspace_max: Vector3 = Field(default=(0.75, 0.35, 0.60), description="box upper corner x y z (m, base)")
    delta_max_translation: float = Field(default=0.02, gt=0, description="action scaling: |dx|,|dy|,|dz| per "
                                                                         "command are clipped to this (m)")
    delta_max_rotation: float = Field(default=0.1, gt=0, description="action scaling: |drx|.. clipped (rad)")
    max_translation_per_step: float = Field(default=0.03, gt=0, description="target moves at most this far per "
                                                                            "command (m)")
    max_rotation_per_step: float = Field(default=0.15, gt=0, description="target turns at most this per command "
                                                                         "(rad)")
    max_linear_velocity: float = Field(default=0.5, gt=0, description="target speed limit (m/s) over the time "
                                                                      "since the previous target")
    max_angular_velocity: float = Field(default=2.0, gt=0, description="target angular speed limit (rad/s)")
    max_target_error: float = Field(default=0.05, gt=0, description="reference clipping: target at most this far "
                                                                    "from the measured pose (m)")
    max_target_rotation_error: float = Field(default=0.5, gt=0, description="target at most this angle from the "
                                                                            "measured orientation (rad)")
    min_step_time: float = Field(default=0.02, gt=0, description="velocity limits use at least this time between "
                                                                 "commands (s), so a burst cannot stall")
    # Orientation limits (SERL's box bounds orientation too): a cone for the tool axis plus a yaw range about it, both
    # around a nominal tool orientation. A workspace_file that holds them overrides these.
    orientation_nominal: Quaternion = Field(default=HOME_ORIENTATION, description="nominal tool orientation x y z w "
                                            "(base frame) the orientation limits are around; default: pointing down")
    max_tilt: float = Field(default=1.0, gt=0, le=math.pi, description="the tool z axis stays within this angle "
                                                                       "(rad) of the nominal's; pi: no cone")
    yaw_min: float = Field(default=-math.pi, ge=-math.pi, le=math.pi, description="lowest rotation about the tool "
                                                                                  "axis relative to the nominal (rad)")
    yaw_max: float = Field(default=math.pi, ge=-math.pi, le=math.pi, description="highest rotation about the tool "
                                                                                 "axis (rad); -pi..pi: no yaw limit")

    @model_validator(mode="after")
    def _box(self) -> SafetyConfig:
        for axis, low, high in zip("xyz", self.workspace_min, self.workspace_max):
            if not high > low:
                raise ValueError(f"workspace_max.{axis} ({high}) must be greater than workspace_min.{axis} ({low})")
        if not self.yaw_max > self.yaw_min:
            raise ValueError(f"yaw_max ({self.yaw_max}) must be greater than yaw_min ({self.yaw_min})")
        norm = math.sqrt(sum(v * v for v in self.orientation_nominal))
        if not (math.isfinite(norm) and abs(norm - 1.0) < 1e-3):
            raise ValueError(f"orientation_nominal {list(self.orientation_nominal)} must be a unit quaternion x y z w "
                             f"(norm {norm:.3f})")
        return self


class WatchdogConfig(ConfigModel):
    command_timeout: float = Field(default=0.3, gt=0, description="no command for this long (s) -> hold the "
                                                                  "current pose")
    max_command_age: float = Field(default=1.0, ge=0, description="reject commands whose header stamp is older "
                                                                  "than this (s); 0 disables")


# ------------------------------------------------------------------------------------------------ franka_control
class ControlLoopConfig(ConfigModel):
    backend: Literal["sim", "franka_ros2", "multipanda"] = "sim"
    control_hz: float = Field(default=10.0, gt=0, description="nominal command rate of the policy / teleop (Hz)")
    tick_hz: float = Field(default=50.0, gt=0, description="watchdog and target re-send rate (Hz)")
    resend_target: bool = Field(default=True, description="re-send the current target every tick (keeps a best-"
                                                           "effort target stream alive)")
    default_action_frame: Literal["base", "ee"] = Field(default="base", description="frame of delta actions whose "
                                                                                    "header.frame_id is empty")
    base_frame: str = Field(default="base", description="frame_id of published poses (fr3_link0, panda_link0..)")
    home_position: Vector3 = HOME_POSITION
    home_orientation: Quaternion = HOME_ORIENTATION
    homing_speed: float = Field(default=0.15, gt=0, description="m/s while moving to home")
    homing_angular_speed: float = Field(default=0.6, gt=0, description="rad/s while moving to home")
    home_tolerance: float = Field(default=0.005, gt=0, description="homing is done within this distance (m)")
    homing_timeout: float = Field(default=20.0, gt=0, description="give up homing after this long (s)")
    state_timeout: float = Field(default=0.5, gt=0, description="no robot state for this long -> fault (s)")
    state_publish_hz: float = Field(default=100.0, gt=0, description="max rate of the republished robot state (Hz)")
    status_hz: float = Field(default=5.0, gt=0, description="status topic rate (Hz); mode changes publish at once")


class GripperActionsConfig(ConfigModel):
    """franka_gripper actions (franka_ros2 and multipanda): binary open/close with hysteresis."""

    enabled: bool = True
    namespace: str = Field(default="/franka_gripper", description="actions <ns>/move, <ns>/grasp, <ns>/homing")
    max_width: float = Field(default=0.08, gt=0, description="open width (m)")
    close_threshold: float = Field(default=0.6, ge=0, le=1, description="command above this -> grasp")
    open_threshold: float = Field(default=0.4, ge=0, le=1, description="command below this -> open")
    speed: float = Field(default=0.1, gt=0, description="finger speed (m/s)")
    force: float = Field(default=30.0, gt=0, description="grasp force (N)")
    epsilon: float = Field(default=0.08, ge=0, description="grasp epsilon inner/outer (m): large = any width counts")


class FrankaRos2BackendConfig(ConfigModel):
    """Official franka_ros2 (FR3, libfranka >= 0.15). Runs with a Cartesian impedance controller that takes a
    streamed target pose (see docs/robot.md)."""

    target_topic: str = "/cartesian_impedance_controller/target_pose"
    target_type: Literal["PoseStamped", "Float64MultiArray"] = "PoseStamped"
    current_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    joint_states_topic: str = "/franka_robot_state_broadcaster/measured_joint_states"
    gripper_joint_states_topic: str = "/franka_gripper/joint_states"
    error_recovery_action: str = "/action_server/error_recovery"
    gripper: GripperActionsConfig = GripperActionsConfig()


class MultipandaBackendConfig(ConfigModel):
    """multipanda_ros2 (Panda/FER on libfranka 0.9.2): FrankaState flat arrays, an ErrorRecovery service and a
    Cartesian impedance controller target (PoseStamped or Float64MultiArray [x y z R00 R01 .. R22])."""

    target_topic: str = "/cartesian_impedance/equilibrium_pose"
    target_type: Literal["PoseStamped", "Float64MultiArray"] = "PoseStamped"
    franka_state_topic: str = "/franka_robot_state_broadcaster/robot_state"
    gripper_joint_states_topic: str = "/panda_gripper/joint_states"
    error_recovery_service: str = "/error_recovery_service_server/error_recovery"
    gripper: GripperActionsConfig = GripperActionsConfig(namespace="/panda_gripper")


class SimBackendConfig(ConfigModel):
    """The MuJoCo sim_robot node: franka_ros2-style pose topics plus a gripper topic and a reset service."""

    target_topic: str = "/cartesian_impedance_controller/target_pose"
    current_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    gripper_joint_states_topic: str = "/franka_gripper/joint_states"
    gripper_command_topic: str = "/sim_robot/gripper_command"
    reset_service: str = "/sim_robot/reset"


class FrankaControlConfig(ConfigModel):
    control: ControlLoopConfig = ControlLoopConfig()
    safety: SafetyConfig = SafetyConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    topics: TopicsConfig = TopicsConfig()
    franka_ros2: FrankaRos2BackendConfig = FrankaRos2BackendConfig()
    multipanda: MultipandaBackendConfig = MultipandaBackendConfig()
    sim: SimBackendConfig = SimBackendConfig()


# ----------------------------------------------------------------------------------------------------- sim_robot
class SimRobotConfig(ConfigModel):
    physics_timestep: float = Field(default=0.002, gt=0, le=0.01, description="MuJoCo timestep (s); the "
                                                                              "impedance controller runs every step")
    real_time_factor: float = Field(default=1.0, gt=0, description="sim seconds per wall second")
    state_hz: float = Field(default=100.0, gt=0, description="state topics rate (Hz)")
    camera_hz: float = Field(default=10.0, gt=0, description="rendered image rate (Hz)")
    cameras: tuple[str, ...] = Field(default=("front", "wrist"), min_length=1, description="front, wrist, side")
    image_topic_pattern: str = Field(default="/camera/{camera}/color/image_raw", description="{camera} = name")
    camera_info_topic_pattern: str = "/camera/{camera}/color/camera_info"
    image_size: tuple[int, int] = Field(default=(96, 96), description="height width (px)")
    stiffness_translation: float = Field(default=800.0, gt=0, description="N/m")
    stiffness_rotation: float = Field(default=40.0, gt=0, description="Nm/rad")
    nullspace_stiffness: float = Field(default=5.0, ge=0, description="Nm/rad towards the home posture")
    cube_size: float = Field(default=0.04, gt=0, description="edge (m)")
    cube_x_range: tuple[float, float] = (0.40, 0.60)
    cube_y_range: tuple[float, float] = (-0.15, 0.15)
    lift_height: float = Field(default=0.06, gt=0, description="success: cube this far above its start (m)")
    seed: int = 0
    base_frame: str = "base"
    target_topic: str = "/cartesian_impedance_controller/target_pose"
    current_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    joint_states_topic: str = "/franka_robot_state_broadcaster/measured_joint_states"
    gripper_joint_states_topic: str = "/franka_gripper/joint_states"
    gripper_command_topic: str = "/sim_robot/gripper_command"
    success_topic: str = "/sim_robot/success"
    reset_service: str = "/sim_robot/reset"


# -------------------------------------------------------------------------------------------------------- camera
class RealSenseCameraConfig(ConfigModel):
    """pyrealsense2 pipelines, one per camera, selected by serial number (empty serial: the only camera)."""

    names: tuple[str, ...] = Field(default=("wrist",), min_length=1)
    serials: tuple[str, ...] = Field(default=("",), min_length=1, description="same order as names")
    width: int = Field(default=640, gt=0)
    height: int = Field(default=480, gt=0)
    fps: int = Field(default=30, gt=0)
    align_depth: bool = False
    image_topic_pattern: str = "/camera/{camera}/color/image_raw"
    camera_info_topic_pattern: str = "/camera/{camera}/color/camera_info"
    depth_topic_pattern: str = "/camera/{camera}/aligned_depth_to_color/image_raw"
    frame_id_pattern: str = "{camera}_color_optical_frame"
    frame_timeout: float = Field(default=1.0, gt=0, description="no frame for this long -> reconnect (s)")
    reconnect_interval: float = Field(default=1.0, gt=0, description="wait between reconnect attempts (s)")
    stamp_source: Literal["auto", "frame", "receive"] = Field(
        default="auto", description="auto: the frame's system-clock timestamp when plausible, else arrival time")
    playback_file: str = Field(default="", description="play a recorded .db3 instead of live cameras")
    playback_real_time: bool = Field(default=True, description="false: as fast as frames are consumed")

    @model_validator(mode="after")
    def _same_length(self) -> RealSenseCameraConfig:
        if len(self.names) != len(self.serials):
            raise ValueError(f"names ({len(self.names)}) and serials ({len(self.serials)}) must have the same "
                             f"length: one serial per camera ('' = the only connected camera)")
        return self


# -------------------------------------------------------------------------------------------------------- policy
class PolicySourceConfig(ConfigModel):
    checkpoint: str = Field(default="", description="policy checkpoint directory (irevla.policy.checkpoint); "
                                                    "empty: preset")
    preset: Literal["none", "tiny"] = Field(default="tiny", description="tiny: a small random-weight VLA (tests, "
                                                                        "dry runs) when no checkpoint is given")
    device: str = "cpu"
    threads: int = Field(default=1, ge=1, description="torch CPU threads")
    seed: int = 0
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = Field(
        default="none", description="torch.compile the VLA when the node starts (a GPU robot PC: reduce-overhead adds "
                                    "CUDA graphs); it compiles during warm-up acts before the first control step; "
                                    "none: eager")


class RlActorConfig(ConfigModel):
    """vla_policy's ``rl_actor`` mode: stage-1 RL episodes on the robot, streamed to ``irevla learner serve``.

    A learner on loopback (or behind an SSH tunnel) takes its token, read from $IREVLA_LEARNER_TOKEN or the file named
    by $IREVLA_LEARNER_TOKEN_FILE (never a parameter: parameters are readable by anyone on the ROS graph); any other
    address needs CURVE key files (``irevla learner keys``): the parameters name the files, not the keys."""

    learner_address: str = Field(default="tcp://127.0.0.1:5555", description="ZeroMQ address of the learner "
                                                                              "(irevla learner serve --bind)")
    actor_id: str = Field(default="arm-1", min_length=1, max_length=128, description="this actor's name at the "
                                                                                     "learner")
    curve_server_key: str = Field(default="", description="CURVE: the learner's public key file (learner.key of "
                                                          "irevla learner keys); with curve_secret it encrypts the "
                                                          "link, required beyond loopback; empty: the token")
    curve_secret: str = Field(default="", description="CURVE: this actor's secret key file (<actor>.key_secret, "
                                                      "mode 0600)")
    latent: Literal["pooled", "tokens"] = Field(default="pooled", description="what is streamed: the token learner's "
                                                "pooled vector or the VLM's tokens; must match the learner's spec")
    explore: bool = Field(default=True, description="sample tanh(mu + std * eps) with the learner's std; false: the "
                                                    "head's mean (demo rollouts, evaluation)")
    initial_log_std: float = Field(default=-1.6, description="exploration log std until the learner's first head")
    seed: int = Field(default=0, description="exploration noise seed")
    noise_beta: float = Field(default=0.0, ge=0, le=2, description="colour of the exploration noise over an "
                                                                   "episode: 0 white, 1 pink (keeps a drift for "
                                                                   "tens of steps), 2 red (irevla.policy.latent_actor)")
    max_episode_steps: int = Field(default=100, ge=1, description="episode time limit in control steps")
    on_time_limit: Literal["failure", "wait"] = Field(
        default="failure", description="failure: end the episode unsuccessful at the limit; wait: hold the arm "
                                       "until end_episode_success / end_episode_failure is called")
    reset_before_episode: bool = Field(default=True, description="call topics.reset_service (franka_control's "
                                                                 "reset_to_home) in start_episode")
    reset_timeout: float = Field(default=30.0, gt=0, description="how long start_episode waits for the reset (s)")
    flush_timeout: float = Field(default=10.0, ge=0, description="at shutdown, wait this long for the learner to "
                                                                 "acknowledge what was sent (s)")
    record_dir: str = Field(default="", description="D_RL: write each finished episode (every camera, proprio, "
                                                    "executed actions, interventions, label; source rl) to this "
                                                    "episode store directory; empty: off")
    record_failures: bool = Field(default=False, description="also write unsuccessful episodes (default: "
                                                             "successes only, D_RL)")
    record_task: str = Field(default="pick-cube", min_length=1, description="task name of the recorded episodes "
                                                                            "(the recorder's task for D_e)")
    record_round: int = Field(default=1, ge=0, description="iRe-VLA round stored in the recorded episodes "
                                                           "(0 = expert demonstrations)")
    reward_source: Literal["human", "classifier", "classifier+human"] = Field(
        default="human", description="who ends an episode with its label (irevla.reward.sources): human (the end "
                                     "services), classifier (the success detector), classifier+human (the detector "
                                     "ends it, a human confirms or vetoes within review_window_s)")
    detector: str = Field(default="", description="success detector directory (irevla reward train) for the "
                                                  "classifier reward sources; trained on this policy's VLM")
    review_window_s: float = Field(default=10.0, gt=0, description="classifier+human: how long the arm holds for "
                                                                   "the human's confirm / veto after the detector "
                                                                   "fired (s); no answer: the detector's label")

    @model_validator(mode="after")
    def _detector_for_the_classifier(self) -> RlActorConfig:
        if self.reward_source != "human" and not self.detector:
            raise ValueError(f"reward_source {self.reward_source!r} needs detector: a success detector directory "
                             f"(irevla reward train --policy <this policy> ...); or reward_source 'human'")
        return self


class VLAPolicyConfig(ConfigModel):
    mode: Literal["deploy", "rl_actor"] = "deploy"
    instruction: str = "pick up the cube"
    control_hz: float = Field(default=10.0, gt=0)
    max_observation_age: float = Field(default=0.5, gt=0, description="skip a step when an image or the state is "
                                                                      "older than this (s)")
    policy: PolicySourceConfig = PolicySourceConfig()
    cameras: CamerasConfig = CamerasConfig()
    topics: TopicsConfig = TopicsConfig()
    rl_actor: RlActorConfig = RlActorConfig()


# -------------------------------------------------------------------------------------------------------- teleop
class SpaceMouseConfig(ConfigModel):
    vendor_id: int = Field(default=0x256F, description="3Dconnexion (0x046D for older Logitech-branded units)")
    product_id: int = Field(default=0, ge=0, description="0: the first 3Dconnexion device found")
    full_scale: float = Field(default=350.0, gt=0, description="raw axis value that counts as full deflection")
    deadband: float = Field(default=0.1, ge=0, lt=1, description="normalised deflection below this is zero")
    axis_signs: tuple[float, float, float, float, float, float] = Field(
        default=(1.0, -1.0, -1.0, 1.0, -1.0, -1.0), description="sign per axis x y z rx ry rz (device -> base)")
    axis_order: tuple[int, int, int, int, int, int] = Field(
        default=(1, 0, 2, 4, 3, 5), description="which device axis drives robot x y z rx ry rz")


class TeleopConfig(ConfigModel):
    device: Literal["auto", "spacemouse", "keyboard"] = "auto"
    rate_hz: float = Field(default=10.0, gt=0)
    translation_scale: float = Field(default=0.02, gt=0, description="m per step at full deflection")
    rotation_scale: float = Field(default=0.1, gt=0, description="rad per step at full deflection")
    intervention_threshold: float = Field(default=1e-3, ge=0, description="action norm above this = takeover")
    intervention_hold: float = Field(default=0.5, ge=0, description="takeover lasts this long after input (s)")
    publish_when_idle: bool = Field(default=True, description="publish zero actions when nobody touches the device")
    spacemouse: SpaceMouseConfig = SpaceMouseConfig()
    topics: TopicsConfig = TopicsConfig()
    output_topic: str = Field(default="", description="empty: topics.teleop_action; set to topics.action "
                                                      "(/irevla/action) to drive the robot directly")


# ------------------------------------------------------------------------------------------------------ recorder
class RecorderConfig(ConfigModel):
    out: str = Field(default="runs/robot/episodes", description="episode directory (EpisodeStore)")
    task: str = "pick-cube"
    family: str = "robot"
    instruction: str = "pick up the cube"
    source: Literal["script", "teleop", "rl", "intervention"] = "teleop"
    round: int = Field(default=0, ge=0)
    action_frame: Literal["base", "ee"] = Field(default="base", description="frame of the recorded delta actions "
                                                                            "(the ActionSpec's frame)")
    max_steps: int = Field(default=600, gt=0, description="stop and save after this many steps")
    history_s: float = Field(default=2.0, gt=0, description="how far back observations are kept to match an "
                                                            "action's stamp (s)")
    keyboard: bool = Field(default=True, description="read keys from the terminal (s start, e end+save, y/n "
                                                     "success, d discard)")
    export_rosbag: bool = Field(default=False, description="also write each episode as rosbag2 (MCAP)")
    rosbag_dir: str = Field(default="", description="default: <out>/rosbag")
    cameras: CamerasConfig = CamerasConfig()
    topics: TopicsConfig = TopicsConfig()


# ----------------------------------------------------------------------------------------------- the gym env
class RobotEnvConfig(ConfigModel):
    """`irevla.robot.env.RobotEnv`: the robot (real or sim_robot) as a gymnasium env speaking the contract."""

    task: str = "pick-cube"
    instruction: str = "pick up the cube"
    control_hz: float = Field(default=10.0, gt=0)
    max_episode_steps: int = Field(default=100, gt=0)
    image_size: tuple[int, int] = Field(default=(96, 96), description="height width every camera image is resized "
                                                                      "to (nearest neighbour) for the contract")
    success_topic: str = Field(default="/sim_robot/success", description="std_msgs/Bool: the task's success (the "
                                                                         "sim publishes it; on the robot a human "
                                                                         "labels, see docs/robot.md)")
    observation_timeout: float = Field(default=2.0, gt=0, description="fail when no fresh observation after this")
    reset_timeout: float = Field(default=30.0, gt=0)
    cameras: CamerasConfig = CamerasConfig()
    topics: TopicsConfig = TopicsConfig()

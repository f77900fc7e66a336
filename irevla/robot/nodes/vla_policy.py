"""vla_policy node: camera images + robot state -> the VLA -> action commands at the control rate.

In the style of crane_x7_vla's node: parameters declared with defaults, latest-value caches for every sensor, the
model loaded on a background thread (the executor keeps spinning, subscriptions keep filling the caches), inference
on a timer at ``control_hz`` in its own callback group (a MultiThreadedExecutor runs subscriptions meanwhile).

Each tick builds an `irevla.spec.Observation` from the newest image of every camera the policy uses and the newest
robot state; if any of them is older than ``max_observation_age`` the tick is skipped (franka_control's watchdog
then holds the arm) -- a policy must never act on a frozen camera. The action is published on ``topics.action``
(sensor_msgs/JointState, irevla.robot.conversions' convention) stamped with the observation's time (its oldest
image), with ``meta/policy_version``. ``topics.policy_info`` (latched JSON) says which policy runs.

Modes:

* ``deploy``: the above, every tick.
* ``rl_actor``: stage-1 RL episodes streamed to the learner (``irevla learner serve``) over
  `irevla.transport.actor_side.ZmqLearnerLink` (``rl_actor.learner_address``; CURVE key files
  ``rl_actor.curve_server_key`` + ``rl_actor.curve_secret``, or on loopback the token from $IREVLA_LEARNER_TOKEN or
  $IREVLA_LEARNER_TOKEN_FILE), one message per finished episode; the node is a thin shell over
  `irevla.robot.rl_actor.RlActorCore`. Services (std_srvs/Trigger): ``~/start_episode`` (calls franka_control's
  ``topics.reset_service`` first when ``rl_actor.reset_before_episode``), ``~/end_episode_success`` and
  ``~/end_episode_failure`` (the human's label).
  Between episodes nothing is published (franka_control holds). Each tick of an episode acts with the head the
  learner sent last (exploring unless ``rl_actor.explore`` is false) -- or, while teleop's action on
  ``topics.teleop_action`` carries ``meta/intervention`` = 1, executes the human's action, flagged as an
  intervention -- and streams the latent + action to the learner. At ``rl_actor.max_episode_steps`` the episode
  ends unsuccessful (``on_time_limit: failure``) or waits for the label (``wait``). Episode starts and ends are
  published as JSON on ``topics.episode_event``. With ``rl_actor.record_dir`` each finished episode is also written
  to that episode store (`irevla.robot.rl_episodes`: D_RL for stage 2): then an observation holds every camera of
  ``cameras.names``, and a step waits for all of them to be fresh.

  Who labels an episode: ``rl_actor.reward_source`` (`irevla.reward.sources`). ``human`` (default): the services
  and the time limit, as above. ``classifier``: a success detector (``rl_actor.detector``, a directory of ``irevla
  reward train``, loaded and checked against ``policy.checkpoint``'s VLM at node start: a detector of another VLM, a
  missing or corrupt file stops the node with a message naming the file) scores every observation on the frozen
  VLM's hidden states the step computed anyway, and ends the episode as a success on the observation it fires on.
  ``classifier+human``: when it fires the arm holds (nothing published) for ``rl_actor.review_window_s``; an
  ``rl_episode_review`` event says so; ``~/end_episode_success`` confirms, ``~/end_episode_failure`` vetoes (a
  failure; recorded even without ``record_failures``: the detector's best negative); no answer: the detector's
  label. A human may still end an episode first (a success the detector missed is a disagreement too). Each end
  event and recorded episode carries the label's source (``success_source``, ``disagreement``, ``human_labels``),
  and with ``record_dir`` every disagreement is appended to ``<record_dir>/disagreements.jsonl``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from irevla.config import ConfigError
from irevla.data.store import EpisodeStore
from irevla.reward.sources import make_reward_source
from irevla.robot.config import VLAPolicyConfig
from irevla.robot.conversions import (
    META_INTERVENTION,
    ConversionError,
    action_to_joint_state,
    action_values_from_joint_state,
    image_to_rgb,
    proprio_from_joint_state,
    stamp_to_seconds,
)
from irevla.robot.policy_runner import LatentActorRunner, PolicyRunner
from irevla.robot.rl_actor import LearnerLink, RlActorCore
from irevla.robot.rl_episodes import RlEpisodeRecorder
from irevla.robot.ros_edge import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STATE_QOS,
    STREAM_EVENTS,
    declare_config,
    run_nodes,
    wall_time,
)
from irevla.spec import Observation


class LatestValue:
    """The newest (stamp, value) of a topic; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stamp: float | None = None
        self.value = None

    def put(self, stamp: float, value) -> None:
        with self._lock:
            self.stamp, self.value = stamp, value

    def get(self):
        with self._lock:
            return self.stamp, self.value


class VLAPolicyNode(Node):
    def __init__(self, config: VLAPolicyConfig | None = None, runner: PolicyRunner | None = None,
                 link: LearnerLink | None = None, **node_kwargs) -> None:
        super().__init__("vla_policy", **node_kwargs)
        self.config = config = declare_config(self, VLAPolicyConfig, config)
        self.rl_mode = config.mode == "rl_actor"
        self.link = link
        self._own_link = False
        self._learner_auth = self._check_learner_setup() if self.rl_mode and link is None else None
        self.episode_store = self._open_episode_store() if self.rl_mode and config.rl_actor.record_dir else None
        # The success detector (classifier reward sources): checked against the checkpoint now, before the model
        # loads and before any episode -- not when it first fires.
        self.detector = (self._load_detector() if self.rl_mode and config.rl_actor.reward_source != "human"
                         else None)
        # Recording keeps every configured camera, not only the policy's (set once the policy has loaded).
        self.record_cameras: tuple[str, ...] = ()
        self.runner: PolicyRunner | LatentActorRunner | None = None
        self.core: RlActorCore | None = None  # rl_actor mode
        self.load_error: str | None = None
        self.images = {camera: LatestValue() for camera in config.cameras.names}
        self.state = LatestValue()
        self.human = LatestValue()  # rl_actor: teleop's newest action (stamp, (values, intervening))
        self.steps = 0
        self.episode_started_at = 0.0  # wall time: an episode acts on observations taken after its start
        self.skipped: dict[str, int] = {}
        self.inference_seconds: deque[float] = deque(maxlen=1000)
        self.image_to_action_seconds: deque[float] = deque(maxlen=1000)
        self.tick_times: deque[float] = deque(maxlen=1000)  # monotonic start of every control tick (jitter)
        self._receive_times = {camera: 0.0 for camera in config.cameras.names}
        for camera, topic in config.cameras.topic_of().items():
            self.create_subscription(Image, topic, lambda message, camera=camera: self._on_image(camera, message),
                                     SENSOR_QOS, event_callbacks=STREAM_EVENTS)
        self.create_subscription(JointState, config.topics.robot_state, self._on_state, SENSOR_QOS,
                                 event_callbacks=STREAM_EVENTS)
        self.action_publisher = self.create_publisher(JointState, config.topics.action, COMMAND_QOS)
        self.info_publisher = self.create_publisher(String, config.topics.policy_info, LATCHED_QOS)
        if self.rl_mode:
            self.create_subscription(JointState, config.topics.teleop_action, self._on_human, COMMAND_QOS)
            self.event_publisher = self.create_publisher(String, config.topics.episode_event, STATE_QOS)
            services = MutuallyExclusiveCallbackGroup()  # one episode command at a time
            self.create_service(Trigger, "~/start_episode", self._srv_start, callback_group=services)
            self.create_service(Trigger, "~/end_episode_success",
                                lambda request, response: self._srv_end(response, True), callback_group=services)
            self.create_service(Trigger, "~/end_episode_failure",
                                lambda request, response: self._srv_end(response, False), callback_group=services)
            self.reset_client = self.create_client(Trigger, config.topics.reset_service,
                                                   callback_group=ReentrantCallbackGroup())
        self.create_timer(1.0 / config.control_hz, self._step, callback_group=MutuallyExclusiveCallbackGroup())
        if runner is None:
            threading.Thread(target=self._load, name="vla_policy_load", daemon=True).start()
        else:
            self._ready(runner)

    # ----------------------------------------------------------------------------------------------- loading
    def _check_learner_setup(self):
        """rl_actor needs pyzmq and the learner's keys or token: say so at start, not after the model has loaded."""
        try:
            from irevla.transport.wire import TransportError, actor_auth
        except ImportError as exc:
            raise ConfigError(f"vla_policy: mode rl_actor needs pyzmq ({exc})") from None
        settings = self.config.rl_actor
        try:
            return actor_auth(settings.learner_address, curve_server_key=settings.curve_server_key or None,
                              curve_secret=settings.curve_secret or None)
        except TransportError as exc:
            raise ConfigError(f"vla_policy: mode rl_actor: {exc}") from None

    def _camera_extrinsics(self) -> dict:
        """The cameras' hand-eye results for the episodes this actor records (cameras.hand_eye_files)."""
        from irevla.calibration.errors import CalibrationError
        from irevla.calibration.result import camera_extrinsics

        cameras = self.config.cameras
        try:
            extrinsics = camera_extrinsics(cameras.names, cameras.hand_eye_files)
        except CalibrationError as exc:
            raise ConfigError(f"vla_policy: cameras.hand_eye_files: {exc}") from None
        return {"camera_extrinsics": extrinsics} if extrinsics else {}

    def _load_detector(self):
        """rl_actor.detector: load it and refuse a detector trained on another VLM than policy.checkpoint's."""
        from irevla.errors import UserError
        from irevla.reward.detector import SETTINGS, SuccessDetector
        from irevla.reward.features import vlm_fingerprint

        settings, checkpoint = self.config.rl_actor, self.config.policy.checkpoint
        if not checkpoint:
            raise ConfigError(f"vla_policy: rl_actor.reward_source {settings.reward_source!r} needs "
                              "policy.checkpoint: the detector's VLM is checked against the checkpoint's, and the "
                              "tiny preset has none")
        try:
            fingerprint = vlm_fingerprint(checkpoint)
        except (UserError, OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"vla_policy: policy.checkpoint {checkpoint!r}: {exc}") from None
        try:
            detector = SuccessDetector.load(settings.detector)
            detector.check_vlm(fingerprint, checkpoint, Path(settings.detector) / SETTINGS)
        except (UserError, OSError) as exc:
            raise ConfigError(f"vla_policy: rl_actor.detector: {exc}") from None
        return detector

    def _open_episode_store(self) -> EpisodeStore:
        """rl_actor.record_dir: create it now, so a bad path stops the node at start, not after an hour's episode."""
        directory = self.config.rl_actor.record_dir
        try:
            return EpisodeStore(directory)
        except OSError as exc:
            raise ConfigError(f"vla_policy: rl_actor.record_dir {directory!r}: {exc}") from None

    def _load(self) -> None:
        begin = time.monotonic()
        try:
            runner = PolicyRunner.load(self.config.policy, self.config.cameras.names)
            self._ready(runner)
        except Exception as exc:  # noqa: BLE001 -- reported, the node stays up so its state is visible
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"could not load the policy: {self.load_error}")
            return
        compiled = f", compiled ({self.config.policy.compile}) and warmed up" if self.config.policy.compile != "none" \
            else ""
        self.get_logger().info(f"policy loaded{compiled} in {time.monotonic() - begin:.1f} s: {runner.source}")

    def _ready(self, runner: PolicyRunner) -> None:
        core = None
        if self.rl_mode:
            settings = self.config.rl_actor
            actor = LatentActorRunner(runner, settings.latent, explore=settings.explore, seed=settings.seed,
                                      initial_log_std=settings.initial_log_std, noise_beta=settings.noise_beta,
                                      noise_horizon=max(2, settings.max_episode_steps))
            if self.link is None:
                from irevla.transport.actor_side import ZmqLearnerLink

                self.link = ZmqLearnerLink(settings.learner_address, self._learner_auth, actor_id=settings.actor_id)
                self._own_link = True
            recorder = None
            if self.episode_store is not None:
                recorder = RlEpisodeRecorder(
                    self.episode_store, actor.action_spec, task=settings.record_task, round=settings.record_round,
                    record_failures=settings.record_failures, max_episode_steps=settings.max_episode_steps,
                    control_hz=self.config.control_hz, report=self.get_logger().error,
                    metadata={"actor_id": settings.actor_id, "policy": runner.source,
                              "checkpoint_id": runner.checkpoint_id, "latent": settings.latent,
                              "explore": settings.explore, **self._camera_extrinsics()})
                self.record_cameras = tuple(self.config.cameras.names)
            reward = make_reward_source(settings.reward_source, self.detector, settings.review_window_s)
            core = RlActorCore(actor, self.link, max_episode_steps=settings.max_episode_steps,
                               report=self.get_logger().error, recorder=recorder, reward=reward)
            recording = (f"; episodes ({'all' if settings.record_failures else 'successes'}) to "
                         f"{self.episode_store.root}" if recorder is not None else "")
            judged = "" if self.detector is None else (
                f"; success from the detector {settings.detector}"
                + (f", reviewed for {settings.review_window_s:g} s" if settings.reward_source == "classifier+human"
                   else ""))
            self.get_logger().info(f"rl_actor: {settings.latent} latents to the learner at "
                                   f"{settings.learner_address} as {settings.actor_id!r}{recording}{judged}; call "
                                   "~/start_episode")
            runner = actor
        # The loader thread publishes the runner before the core: whoever sees the core (the control timer, the
        # services, a test waiting for readiness) finds the runner it drives already in place.
        self.runner = runner
        self.core = core
        self._announce()

    def _announce(self) -> None:
        assert self.runner is not None
        info = self.runner.info() | {"mode": self.config.mode, "instruction": self.config.instruction,
                                     "control_hz": self.config.control_hz}
        if self.core is not None:
            info |= {"learner": self.config.rl_actor.learner_address, "actor_id": self.config.rl_actor.actor_id,
                     "episode": self.core.episode, "episode_running": self.core.active,
                     "reward_source": self.config.rl_actor.reward_source, "reviewing": self.core.reviewing}
        self.info_publisher.publish(String(data=json.dumps(info)))

    def close(self) -> None:
        if self._own_link and self.link is not None:
            self.link.close(flush_timeout_s=self.config.rl_actor.flush_timeout)
            self._own_link = False

    # ------------------------------------------------------------------------------------------------ caches
    def _on_image(self, camera: str, message: Image) -> None:
        try:
            image = image_to_rgb(message)
        except ConversionError as exc:
            self.get_logger().warning(f"camera {camera}: {exc}", throttle_duration_sec=5.0)
            return
        self._receive_times[camera] = time.monotonic()
        self.images[camera].put(stamp_to_seconds(message.header.stamp), image)

    def _on_state(self, message: JointState) -> None:
        try:
            self.state.put(stamp_to_seconds(message.header.stamp), proprio_from_joint_state(message))
        except ConversionError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)

    def _on_human(self, message: JointState) -> None:
        runner = self.runner
        if runner is None:
            return
        frame = message.header.frame_id or "base"
        try:
            values, meta = action_values_from_joint_state(message, runner.action_spec.names)
            if frame != runner.action_spec.frame:
                raise ConversionError(f"frame {frame!r}, the policy acts in {runner.action_spec.frame!r}")
        except ConversionError as exc:
            self.get_logger().warning(f"teleop action ignored: {exc}", throttle_duration_sec=5.0)
            return
        self.human.put(stamp_to_seconds(message.header.stamp), (values, meta.get(META_INTERVENTION, 0.0) > 0.5))

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.get_logger().warning(f"step skipped: {reason}", throttle_duration_sec=2.0)

    def _observe(self, newer_than: float = 0.0) -> tuple[Observation | None, str]:
        """(the observation from the newest image of every camera and the newest state, "") or (None, why not):
        every part must be younger than max_observation_age and stamped after `newer_than`."""
        runner = self.runner
        now, max_age = wall_time(), self.config.max_observation_age
        oldest = max(now - max_age, newer_than)
        since = " taken since the episode started" if newer_than > now - max_age else ""
        images, stamps = {}, []
        for camera in self.record_cameras or runner.cameras:
            stamp, image = self.images[camera].get()
            if image is None or stamp < oldest:
                return None, f"no image from {camera} younger than {max_age:.2f} s{since}"
            images[camera], stamps = image, stamps + [stamp]
        state_stamp, proprio = self.state.get()
        if proprio is None or state_stamp < oldest:
            return None, f"no robot state younger than {max_age:.2f} s{since}"
        if self.record_cameras:  # the policy picks its cameras out of the recorded ones
            return Observation(images=images, proprio=proprio, instruction=self.config.instruction,
                               timestamp=min(stamps)), ""
        return runner.observation(images, proprio, self.config.instruction, min(stamps)), ""

    def _human_action(self) -> np.ndarray | None:
        """Teleop's action while a human has taken over (its intervention flag, fresh), else None."""
        stamp, value = self.human.get()
        if value is None or wall_time() - stamp > self.config.max_observation_age:
            return None
        values, intervening = value
        return values if intervening else None

    # -------------------------------------------------------------------------------------------------- step
    def _step(self) -> None:
        self.tick_times.append(time.monotonic())
        runner = self.runner
        if runner is None:
            return
        core = self.core
        if core is not None and core.reviewing:  # the arm holds (nothing published) while the human reviews
            summary = core.poll_review()  # the window closed without an answer: the detector's label
            if summary is not None:
                self._episode_event("rl_episode_end", summary | {"reason": "review window closed"})
            return
        if core is not None and not core.active:
            return  # between episodes: nothing to do; franka_control holds the arm
        observation, why_not = self._observe(self.episode_started_at if core is not None else 0.0)
        if observation is None:
            self._skip(why_not)
            return
        intervention = None
        begin = time.perf_counter()
        try:
            if core is None:
                action = runner.act(observation)
            elif core.time_up:
                self._time_up(observation)
                return
            else:
                tick = core.tick(observation, self._human_action())
                action, intervention = tick.action, tick.intervention
        except Exception as exc:  # noqa: BLE001 -- a NaN from the network must stop the arm, not the node
            self._skip(f"policy failed: {exc}")
            return
        if action is None:  # the detector fired on this observation: the episode ended, or the human reviews
            self._on_verdict(tick)
            return
        self.inference_seconds.append(time.perf_counter() - begin)
        observed_at = observation.timestamp
        self.action_publisher.publish(action_to_joint_state(action, runner.action_spec.names, observed_at,
                                                            runner.action_spec.frame, policy_version=runner.version,
                                                            intervention=intervention))
        newest_image = max(self._receive_times[c] for c in runner.cameras)
        self.image_to_action_seconds.append(time.monotonic() - newest_image)
        self.steps += 1

    # ---------------------------------------------------------------------------------------------- episodes
    def _time_up(self, observation: Observation) -> None:
        if self.config.rl_actor.on_time_limit == "wait":
            self._skip(f"time limit of {self.config.rl_actor.max_episode_steps} steps reached: waiting for "
                       "~/end_episode_success or ~/end_episode_failure")
            return
        try:
            summary = self.core.end_at_time_limit(observation)
        except RuntimeError:
            return  # a label arrived meanwhile
        self._episode_event("rl_episode_end", summary | {"reason": "time limit"})

    def _on_verdict(self, tick) -> None:
        if tick.ended is not None:
            self._episode_event("rl_episode_end", tick.ended | {"reason": "classifier"})
            return
        verdict = tick.review.verdict
        self._episode_event("rl_episode_review", {
            "episode": self.core.episode, "success_frame": verdict.frame, "detector_p": verdict.probability,
            "window_s": tick.review.window_s})
        self.get_logger().warning(
            f"the detector says episode {self.core.episode} succeeded (frame {verdict.frame}, p "
            f"{verdict.probability:.3f}): ~/end_episode_success confirms, ~/end_episode_failure vetoes, within "
            f"{tick.review.window_s:g} s; the arm holds")

    def _episode_event(self, kind: str, fields: dict) -> None:
        self.event_publisher.publish(String(data=json.dumps({"event": kind, "stamp": wall_time(), **fields})))
        self.get_logger().info(f"{kind}: {json.dumps(fields)}")
        self._announce()

    def _reset_robot(self) -> str:
        """'' after franka_control's reset succeeded, else why it did not."""
        service, timeout = self.config.topics.reset_service, self.config.rl_actor.reset_timeout
        if not self.reset_client.wait_for_service(timeout_sec=min(timeout, 5.0)):
            return f"reset service {service} is not available (is franka_control running?)"
        done = threading.Event()
        future = self.reset_client.call_async(Trigger.Request())
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            return f"{service} did not answer within {timeout:.0f} s"
        response = future.result()
        if response is None or not response.success:
            return f"reset failed: {response.message if response is not None else future.exception()}"
        return ""

    def _srv_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        core = self.core
        if core is None:
            response.success, response.message = False, (f"the policy is not loaded: {self.load_error}"
                                                         if self.load_error else "the policy is still loading")
            return response
        if core.active:
            response.success, response.message = False, (f"episode {core.episode} is running ({core.steps} "
                                                         "steps); end it first")
            return response
        if self.config.rl_actor.reset_before_episode:
            failure = self._reset_robot()
            if failure:
                response.success, response.message = False, failure
                return response
        self.episode_started_at = wall_time()
        try:
            episode = core.begin_episode()
        except RuntimeError as exc:
            response.success, response.message = False, str(exc)
            return response
        self._episode_event("rl_episode_start", {"episode": episode, "policy_version": self.runner.version})
        response.success, response.message = True, f"episode {episode} started (head version {self.runner.version})"
        return response

    def _srv_end(self, response: Trigger.Response, success: bool) -> Trigger.Response:
        """The human's label: ends the running episode, or answers the detector's review (success = confirm,
        failure = veto)."""
        core = self.core
        if core is not None and core.reviewing:
            try:
                summary, answered = core.answer_review(success)
            except RuntimeError:  # the window closed and the timer ended the episode meanwhile
                response.success, response.message = False, "no episode is running (the review window had closed)"
                return response
            self._episode_event("rl_episode_end", summary | {"reason": "review"})
            response.success = True
            response.message = self._ended_message(summary) + (
                "" if answered else "; your answer came after the review window: the detector's label stands")
            return response
        if core is None or not core.active:
            response.success, response.message = False, "no episode is running"
            return response
        observation, why_not = self._observe()
        if observation is None:
            response.success, response.message = False, f"cannot end the episode yet: {why_not}"
            return response
        try:
            summary = core.human_label(observation, success)
        except Exception as exc:  # noqa: BLE001 -- told to the caller; the episode stays open
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
            return response
        self._episode_event("rl_episode_end", summary | {"reason": "label"})
        response.success, response.message = True, self._ended_message(summary)
        return response

    @staticmethod
    def _ended_message(summary: dict) -> str:
        message = (f"episode {summary['episode']} ended ({'success' if summary['success'] else 'failure'}, "
                   f"{summary['steps']} steps, {summary['interventions']} interventions")
        if summary.get("success_source") not in (None, "human") or summary.get("disagreement"):
            message += f"; label from {summary['success_source']}"
            if summary.get("disagreement"):
                message += f", disagreement: {summary['disagreement']}"
        message += ")"
        if "recorded" in summary:
            message += (f"; recorded to {summary['recorded']}" if summary["recorded"]
                        else f"; {summary['not_recorded']}")
        return message

    def latency_summary(self) -> dict:
        def percentiles(values) -> dict:
            array = np.asarray(values, dtype=float) * 1000.0
            return {"p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99)),
                    "n": int(array.size)} if array.size else {"n": 0}

        return {"inference": percentiles(self.inference_seconds),
                "image_to_action": percentiles(self.image_to_action_seconds)}


def main(args=None) -> int:
    return run_nodes(lambda: [VLAPolicyNode()], args)


if __name__ == "__main__":
    sys.exit(main())

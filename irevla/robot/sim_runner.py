"""The simulated Panda (`irevla.sim.panda`) in real time, for the sim_robot node (no ROS here).

`SimRunner` runs the simulation in a child process (the GL context lives there; ``process=False``: a thread of
this one): each pass of `run_real_time` steps as many physics steps as the wall clock calls for (sim time =
``real_time_factor`` x wall time), reads the state at ``state_hz`` and renders at ``camera_hz``; `on_state` /
`on_images` receive them in this process, and targets / resets go the other way. The child has its own GIL: a
busy ROS executor in this process cannot slow the physics down (SimRunner's docstring has the measurements).
"""

from __future__ import annotations

import copy
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from irevla.robot.config import SimRobotConfig
from irevla.rotations import Pose
from irevla.sim.panda import PickCubeSim, SimState, camera_intrinsics

__all__ = ["MAX_BATCH", "MAX_LAG", "RunnerStats", "SimRunner", "SimState", "camera_intrinsics", "run_real_time",
           "serve"]


@dataclass
class RunnerStats:
    physics_steps: int = 0
    frames_rendered: int = 0
    wall_time: float = 0.0
    sim_time: float = 0.0
    render_seconds: float = 0.0
    physics_seconds: float = 0.0
    resets: int = 0

    @property
    def real_time_factor(self) -> float:
        return self.sim_time / self.wall_time if self.wall_time > 0 else 0.0


MAX_LAG = 0.1  # s of sim time to catch up at most; beyond it the sim slows down instead of spiralling
MAX_BATCH = 0.01  # s of wall time between loop passes at most: a new target reaches the controller within this


def run_real_time(sim: PickCubeSim, stats: RunnerStats, wait: Callable[[float], None],
                  on_state: Callable[[SimState, float], None],
                  on_images: Callable[[dict[str, np.ndarray], float], None] | None,
                  stopped: Callable[[], bool], wall_clock: Callable[[], float] = time.time) -> None:
    """The real-time loop: each pass steps as many physics steps as the wall clock calls for (``real_time_factor``;
    at most `MAX_LAG` behind), then calls `on_state` / renders for `on_images` when they are due, then ``wait(s)``
    until the next thing is due (at most `MAX_BATCH`); `wait` returns early to apply commands."""
    config = sim.config
    dt = float(sim.model.opt.timestep)
    state_period, camera_period = 1.0 / config.state_hz, 1.0 / config.camera_hz
    began = start_wall = time.monotonic()  # start_wall moves forward when the sim drops a backlog
    stepped = 0  # physics steps taken by this loop (a reset sets MuJoCo's own clock back; this count goes on)
    next_state = next_camera = began
    while not stopped():
        now = time.monotonic()
        lag = (now - start_wall) * config.real_time_factor - stepped * dt
        if lag > MAX_LAG:  # cannot keep up: drop the backlog (the sim slows down) rather than spiral
            start_wall += (lag - MAX_LAG) / config.real_time_factor
            lag = MAX_LAG
        steps = int(lag / dt + 1e-9)
        if steps > 0:
            begin = time.perf_counter()
            sim.step(steps)
            stats.physics_seconds += time.perf_counter() - begin
            stats.physics_steps += steps
            stepped += steps
        now = time.monotonic()
        stats.wall_time = now - began
        stats.sim_time = stepped * dt
        if on_images is not None and now >= next_camera:
            begin = time.perf_counter()
            images = sim.render()
            stamp = wall_clock()
            stats.render_seconds += time.perf_counter() - begin
            stats.frames_rendered += 1
            on_images(images, stamp)
            next_camera = _next_tick(next_camera, camera_period, now)
        if now >= next_state:
            on_state(sim.snapshot(), wall_clock())
            next_state = _next_tick(next_state, state_period, now)
        due = min(next_state, next_camera) if on_images is not None else next_state
        wait(min(max(due - time.monotonic(), 0.0), MAX_BATCH))


def _next_tick(tick: float, period: float, now: float) -> float:
    """Keep the phase of a periodic tick; after a stall longer than a period, restart one period from now instead of
    bursting to catch up (a burst would only repeat the same state)."""
    tick += period
    return tick if tick > now else now + period


class SimRunner:
    """Runs `PickCubeSim` in real time, by default in a child process.

    ``on_state(state, stamp)`` at ``state_hz``; ``on_images(images, stamp)`` at ``camera_hz``; stamps are the
    wall-clock seconds (what ROS stamps carry) at which the state was read / the frame rendered. Callbacks run on one
    thread of this process that the runner owns, and must not block long.

    Why a process: in a process that also spins a ROS executor (``irevla robot up --sim``, tests with several nodes),
    a sim *thread* must win the GIL back after every MuJoCo call (each releases it) and every sleep -- thousands of
    times a second -- against executor threads that need ~1 ms of Python per message. On a loaded machine the holder
    is often descheduled, each hand-back costs a scheduler slice, and the loop fell to 4-7 state updates/s at
    0.4-0.6x real time (franka_control then faults on stale state). The child process has the GIL to itself: its
    physics keeps real time whatever the executor does; this process receives a state every 1 / ``state_hz`` and, if it
    fell behind, only the newest one is delivered (never a backlog of stale ones). ``process=False`` runs the same
    loop on a thread here (no ROS executor around, e.g. a benchmark of the sim alone).
    """

    MAX_LAG = MAX_LAG

    def __init__(self, config: SimRobotConfig, on_state: Callable[[SimState, float], None],
                 on_images: Callable[[dict[str, np.ndarray], float], None] | None = None,
                 render: bool = True, wall_clock: Callable[[], float] = time.time, process: bool = True) -> None:
        self.config = config
        self.on_state, self.on_images = on_state, on_images
        self.render = render and on_images is not None
        self.wall_clock = wall_clock
        self.process = process
        self.stats = RunnerStats()
        self.error: BaseException | None = None
        self.sim: PickCubeSim | None = None  # the simulation itself: only with process=False (else in the child)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._started = False
        # thread mode
        self._wake = threading.Event()
        self._pending_target: Pose | None = None
        self._pending_gripper: float | None = None
        self._pending_reset: list[tuple[int | None, threading.Event]] = []
        # process mode
        self._child: subprocess.Popen | None = None
        self._commands: Connection | None = None
        self._events: Connection | None = None
        self._send_lock = threading.Lock()
        self._resets: dict[int, threading.Event] = {}
        self._reset_ids = itertools.count()
        self._child_gone = False
        self._thread = threading.Thread(target=self._receive if process else self._run_thread, name="sim_robot",
                                        daemon=True)

    def start(self, timeout: float = 60.0) -> SimRunner:
        """Start the simulation; returns once the first state can be read (raises if it failed to start)."""
        if self.process:
            self._spawn()
        self._started = True
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"sim_robot: the simulation did not start within {timeout:.0f} s")
        if self.error is not None:
            error = self.error
            self.stop()
            raise RuntimeError(f"sim_robot: the simulation failed to start: {error}") from error
        return self

    def intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) of a rendered camera."""
        return camera_intrinsics(self.config, camera)

    # ----------------------------------------------------------------------------------------- thread-safe API
    def set_target(self, pose: Pose) -> None:
        if self.process:
            self._send(("target", pose))
            return
        with self._lock:
            self._pending_target = pose
        self._wake.set()

    def set_gripper(self, command: float) -> None:
        if self.process:
            self._send(("gripper", float(command)))
            return
        with self._lock:
            self._pending_gripper = command
        self._wake.set()

    def request_reset(self, seed: int | None = None, timeout: float = 10.0) -> bool:
        """Arm home, gripper open, cube placed anew; True once the simulation has done it (False on timeout)."""
        done = threading.Event()
        if self.process:
            with self._lock:
                token = next(self._reset_ids)
                self._resets[token] = done
            self._send(("reset", seed, token))
        else:
            with self._lock:
                self._pending_reset.append((seed, done))
            self._wake.set()
        return done.wait(timeout) and not self._child_gone

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.process and self._child is not None:
            self._send(("stop",))
            try:
                self._child.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait(timeout=5.0)
        if self._started and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._send_lock:
            for connection in (self._commands, self._events):
                if connection is not None:
                    connection.close()
            self._commands = self._events = None

    # ------------------------------------------------------------------------------------------- process mode
    def _spawn(self) -> None:
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
        code = "import sys; from irevla.robot.sim_runner import serve; sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))"
        try:
            self._child = subprocess.Popen([sys.executable, "-c", code, str(command_read), str(event_write)],
                                           pass_fds=(command_read, event_write), env=environment,
                                           stdin=subprocess.DEVNULL)
        finally:
            os.close(command_read)
            os.close(event_write)
        self._commands = Connection(command_write, readable=False)
        self._events = Connection(event_read, writable=False)
        self._send(("start", self.config, self.render))

    def _send(self, message: tuple) -> None:
        with self._send_lock:  # callers are executor threads; one message at a time on the pipe
            if self._commands is None or self._child_gone:
                return
            try:
                self._commands.send(message)
            except OSError:  # the child is gone; _receive reports why
                self._child_gone = True

    def _receive(self) -> None:
        """This process's side: deliver what the child sends. After a stall only the newest state and frame count."""
        events = self._events
        assert events is not None
        ended = False
        while not ended:
            batch = []
            try:
                batch.append(events.recv())
                while len(batch) < 256 and events.poll(0):
                    batch.append(events.recv())
            except (EOFError, OSError):  # the child is gone; what it sent before still counts
                ended = True
            state = images = None
            for message in batch:
                kind = message[0]
                if kind == "state":
                    state = message
                elif kind == "images":
                    images = message
                elif kind == "reset_done":
                    with self._lock:
                        done = self._resets.pop(message[1], None)
                    if done is not None:
                        done.set()
                elif kind == "ready":
                    self._ready.set()
                elif kind == "error":
                    self.error = RuntimeError(message[1])
                    self._ready.set()
            try:
                if images is not None and self.on_images is not None and not self._stop.is_set():
                    self.on_images(images[1], images[2])
                if state is not None:
                    for name, value in vars(state[3]).items():
                        setattr(self.stats, name, value)
                    if not self._stop.is_set():
                        self.on_state(state[1], state[2])
            except BaseException as exc:  # noqa: BLE001 -- surfaced to the node, like a failing simulation
                self.error = exc
                self._send(("stop",))
        self._child_gone = True
        if not self._stop.is_set() and self.error is None:
            try:
                code = self._child.wait(timeout=2.0) if self._child is not None else None
            except subprocess.TimeoutExpired:  # it closed its end but lives on
                code = None
            self.error = RuntimeError(f"the simulation process exited unexpectedly (exit status {code})")
        self._ready.set()
        with self._lock:
            waiting, self._resets = list(self._resets.values()), {}
        for done in waiting:
            done.set()  # request_reset sees _child_gone and answers False

    # -------------------------------------------------------------------------------------------- thread mode
    def _apply_pending(self, sim: PickCubeSim) -> None:
        with self._lock:
            target, gripper, resets = self._pending_target, self._pending_gripper, self._pending_reset
            self._pending_target, self._pending_gripper, self._pending_reset = None, None, []
        for seed, done in resets:
            sim.reset(seed)
            self.stats.resets += 1
            target = None  # a target sent before the reset is stale
            done.set()
        if target is not None:
            sim.set_target(target)
        if gripper is not None:
            sim.set_gripper(gripper)

    def _run_thread(self) -> None:
        try:
            sim = self.sim = PickCubeSim(self.config, render=self.render)
            if sim.renderer is not None:
                sim.render()  # the first frame compiles shaders (~0.5 s on llvmpipe): not inside the real-time loop
        except BaseException as exc:  # noqa: BLE001 -- reported by start()
            self.error = exc
            self._ready.set()
            return
        self._ready.set()

        def wait(seconds: float) -> None:
            if self._wake.wait(seconds):
                self._wake.clear()
            self._apply_pending(sim)

        try:
            run_real_time(sim, self.stats, wait, self.on_state, self.on_images if self.render else None,
                          self._stop.is_set, self.wall_clock)
        except BaseException as exc:  # noqa: BLE001 -- surfaced to the node
            self.error = exc
        finally:
            sim.close()


class _Outbox:
    """The child's sender thread. States and frames are latest-value slots (a slow reader gets the newest, the loop
    never blocks on the pipe); other events (ready, reset done, error) are all delivered, in order."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._condition = threading.Condition()
        self._queue: list[tuple] = []
        self._latest: dict[str, tuple] = {}
        self._closing = False
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="sim_robot_outbox", daemon=True)
        self._thread.start()

    def put(self, message: tuple, latest: bool = False) -> None:
        with self._condition:
            if latest:
                self._latest[message[0]] = message
            else:
                self._queue.append(message)
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (self._queue or self._latest or self._closing):
                    self._condition.wait()
                if self._queue:
                    message = self._queue.pop(0)
                elif self._latest:
                    message = self._latest.pop(next(iter(self._latest)))
                else:
                    return
            try:
                self._connection.send(message)
            except OSError:  # the parent is gone
                self.broken = True
                return

    def close(self, timeout: float = 2.0) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join(timeout)


def serve(command_fd: int, event_fd: int) -> int:
    """The child process of `SimRunner` (process mode): commands in on `command_fd`, events out on `event_fd`.
    It ends on a stop command, or when the parent is gone (its end of a pipe closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    commands = Connection(command_fd, writable=False)
    outbox = _Outbox(Connection(event_fd, readable=False))
    stats = RunnerStats()
    stop = False
    try:
        kind, config, render = commands.recv()
        assert kind == "start", kind
        sim = PickCubeSim(config, render=render)
        if sim.renderer is not None:
            sim.render()  # the first frame compiles shaders (~0.5 s on llvmpipe): not inside the real-time loop
    except EOFError:
        return 0
    except BaseException as exc:  # noqa: BLE001 -- sent to the parent, which raises it from start()
        outbox.put(("error", f"{type(exc).__name__}: {exc}"))
        outbox.close()
        return 1
    outbox.put(("ready",))

    def apply(message: tuple) -> None:
        nonlocal stop
        kind = message[0]
        if kind == "target":
            sim.set_target(message[1])
        elif kind == "gripper":
            sim.set_gripper(message[1])
        elif kind == "reset":
            sim.reset(message[1])
            stats.resets += 1
            outbox.put(("reset_done", message[2]))
        elif kind == "stop":
            stop = True

    def wait(seconds: float) -> None:
        nonlocal stop
        try:
            if commands.poll(seconds):
                while not stop:
                    apply(commands.recv())
                    if not commands.poll(0):
                        break
        except (EOFError, OSError):  # the parent is gone
            stop = True

    status = 0
    try:
        run_real_time(sim, stats, wait,
                      lambda state, stamp: outbox.put(("state", state, stamp, copy.copy(stats)), latest=True),
                      (lambda images, stamp: outbox.put(("images", images, stamp), latest=True)) if render else None,
                      lambda: stop or outbox.broken)
    except BaseException as exc:  # noqa: BLE001 -- sent to the parent (the node logs it)
        outbox.put(("error", f"the simulation stopped: {type(exc).__name__}: {exc}"))
        status = 1
    finally:
        sim.close()
        outbox.close()
    return status

"""The actor <-> learner transport over real ZeroMQ sockets on 127.0.0.1: heads and whole episodes arrive intact, a
killed learner neither stops nor loses the actor's data, wrong tokens, garbage and oversized messages are refused, and
CURVE keys encrypt and admit only the actors they name."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from transport_learner_proc import digest, head_params  # noqa: E402

from irevla.cli import main as irevla_main  # noqa: E402
from irevla.errors import UserError  # noqa: E402
from irevla.robot.rl_actor import RlActorCore  # noqa: E402
from irevla.spec import Observation  # noqa: E402
from irevla.transport.actor_side import ZmqLearnerLink  # noqa: E402
from irevla.transport.learner_side import LearnerServer  # noqa: E402
from irevla.transport.messages import EpisodeEnd, Transition, pooled_latent  # noqa: E402
from irevla.transport.wire import (  # noqa: E402
    Codec,
    TransportError,
    actor_auth,
    learner_auth,
    load_token,
    mac_frames,
    write_keys,
)

TOKEN = secrets.token_hex(32)
HELPER = Path(__file__).with_name("transport_learner_proc.py")
REPO = Path(__file__).resolve().parents[2]
FAST = {"heartbeat_s": 0.1, "ack_timeout_s": 1.0, "dead_after_s": 1.0, "max_backoff_s": 2.0}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def transition(step: int, episode: int = 0, tokens=None, mask=None, intervention=False) -> Transition:
    rng = np.random.default_rng(step)
    if tokens is None:
        tokens = rng.standard_normal((5, 6)).astype(np.float16)
        mask = np.array([True, True, True, False, True])
    return Transition(episode=episode, step=step, latent_tokens=tokens, latent_mask=mask,
                      proprio=rng.standard_normal(7).astype(np.float32), action=rng.uniform(-1, 1, 7).astype(np.float32),
                      intervention=intervention, policy_version=step // 10)


def drain(server: LearnerServer, count: int, timeout: float = 20.0) -> list:
    got: list = []
    wait_for(lambda: got.extend(server.poll(timeout_ms=50)) or len(got) >= count, timeout, f"{count} items")
    server.commit()
    return got


FINAL = (np.ones((2, 4), np.float16), np.array([True, False]))


def send_episode(link, episode: int, steps: int, success: bool = False, **transition_args) -> list:
    """Send one whole episode; returns what was sent (its transitions, then its end)."""
    sent = [transition(step, episode=episode, **transition_args) for step in range(steps)]
    for item in sent:
        link.send_transition(item)
    link.send_episode_end(episode, steps, success, FINAL, np.zeros(7, np.float32))
    return [*sent, EpisodeEnd(episode, steps, success, *FINAL, np.zeros(7, np.float32))]


@pytest.fixture
def server():
    with LearnerServer("tcp://127.0.0.1:*", TOKEN) as learner:
        yield learner


def test_heads_arrive_bit_identical_latest_only(server):
    server.publish_head(1, {"w": np.zeros(3, np.float32)})
    params = {"head.0.weight": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32),
              "head.0.bias": np.arange(4, dtype=np.float64), "steps": np.array([7], np.int64),
              "mask": np.array([True, False])}
    server.publish_head(2, params)  # version 1 is replaced, never sent
    with pytest.raises(ValueError, match="not newer"):
        server.publish_head(2, params)
    with ZmqLearnerLink(server.address, TOKEN, "arm-1", **FAST) as link:
        version, received = wait_for(link.poll_head, what="the head")
        assert version == 2 and set(received) == set(params)
        for name, array in params.items():
            assert received[name].dtype == array.dtype and received[name].shape == array.shape
            assert received[name].tobytes() == array.tobytes()
        assert link.poll_head() is None  # returned once
        server.publish_head(3, head_params(3))
        version, received = wait_for(link.poll_head, what="head 3")
        assert version == 3 and np.array_equal(received["w"], head_params(3)["w"])
        assert link.poll_head() is None
        assert link.stats()["heads_received"] == 2 and server.stats()["heads_sent"] == 2


def test_whole_episodes_arrive_in_order_from_two_actors_and_are_acknowledged_once_stored(server):
    sent = {"arm-1": [], "arm-2": []}
    with (ZmqLearnerLink(server.address, TOKEN, "arm-1", **FAST) as arm1,
          ZmqLearnerLink(server.address, TOKEN, "arm-2", **FAST) as arm2):
        for step in range(40):
            item = transition(step, intervention=step % 7 == 0)
            arm1.send_transition(item)
            sent["arm-1"].append(item)
        assert arm1.stats()["open_steps"] == 40 and server.poll(timeout_ms=300) == []  # an open episode stays home
        arm1.send_episode_end(0, 40, True, FINAL, np.zeros(7, np.float32))
        sent["arm-1"].append(EpisodeEnd(0, 40, True, *FINAL, np.zeros(7, np.float32)))
        for episode in range(3, 7):  # pooled latents: tokens (1, D)
            tokens, mask = pooled_latent(np.full(16, episode, np.float32))
            sent["arm-2"] += send_episode(arm2, episode, 10, tokens=tokens, mask=mask)
        got = drain(server, 41 + 44)
        assert arm1.flush(10) and arm2.flush(10)
        assert arm1.stats()["acked"] == 41 and arm2.stats()["buffered"] == 0 and arm2.stats()["acked"] == 44
    assert len(got) == 85 and server.poll() == []
    for actor, items in sent.items():
        received = [r.item for r in got if r.actor == actor]
        assert [type(r) for r in received] == [type(s) for s in items]
        assert [digest(r) for r in received] == [digest(s) for s in items]  # same order, same bytes, same dtypes
    end = [r.item for r in got if isinstance(r.item, EpisodeEnd) and r.actor == "arm-1"][0]
    assert end.success is True and end.final_tokens.dtype == np.float16
    stats = server.stats()
    assert stats["transitions"] == 80 and stats["episodes"] == 5
    assert stats["rejected"] == 0 and stats["duplicates"] == 0 and stats["actors"] == ["arm-1", "arm-2"]


def test_an_episode_is_acknowledged_only_after_the_learner_polls_again():
    with LearnerServer("tcp://127.0.0.1:*", TOKEN) as server, ZmqLearnerLink(server.address, TOKEN, "arm-1",
                                                                           **FAST) as link:
        send_episode(link, 0, 3)
        got: list = []
        wait_for(lambda: got.extend(server.poll(timeout_ms=50)) or len(got) >= 4, what="the episode")
        time.sleep(2.5)  # more than ack_timeout_s: the actor asks (sync), but the episode is not stored yet
        assert link.stats()["acked"] == 0 and link.stats()["resent"] == 0 and not link.flush(0.1)
        assert server.poll(timeout_ms=0) == []  # this poll stores-then-acknowledges the first one's episode
        assert link.flush(10) and link.stats()["acked"] == 4 and server.stats()["duplicates"] == 0


def test_a_learner_that_does_not_keep_up_pushes_back_and_loses_nothing():
    with LearnerServer("tcp://127.0.0.1:*", TOKEN, max_inbox_items=3) as server:
        with ZmqLearnerLink(server.address, TOKEN, "arm-1", **FAST) as link:
            sent = [item for episode in range(4) for item in send_episode(link, episode, 2)]  # 3 items each
            wait_for(lambda: server.stats()["backpressure"] > 0, what="back-pressure")
            assert server.stats()["inbox_items"] == 3 and link.stats()["acked"] == 0  # taken != acknowledged
            got = drain(server, 12)
            assert [digest(r.item) for r in got] == [digest(item) for item in sent]
            assert link.flush(10) and server.stats()["episodes"] == 4


class StubRunner:
    """Enough of PolicyRunner for RlActorCore: a latent from the timestamp, the head's `w` as the action."""

    def __init__(self) -> None:
        self.version, self.w = 0, np.zeros(7, np.float32)

    def encode(self, observation):
        return np.full((3, 8), observation.timestamp, np.float32) + np.arange(8), np.array([True, True, False])

    def act_from_latent(self, tokens, mask, proprio):
        return self.w.copy()

    def load_head_state(self, params, version):
        self.w, self.version = np.asarray(params["w"], np.float32), version


class RecordingLink:
    """Forwards to a link; remembers what was sent and how long each call took."""

    def __init__(self, link) -> None:
        self.link, self.actor_id, self.sent, self.durations = link, link.actor_id, [], []

    def send_transition(self, item):
        start = time.monotonic()
        self.link.send_transition(item)
        self.durations.append(time.monotonic() - start)
        self.sent.append(digest(item))

    def send_episode_end(self, episode, steps, success, final_latent, final_proprio):
        self.link.send_episode_end(episode, steps, success, final_latent, final_proprio)
        self.sent.append(digest(EpisodeEnd(episode, steps, success, *final_latent, final_proprio)))

    def poll_head(self):
        return self.link.poll_head()


def start_learner(address: str, version: int, record: Path, hang_after: int = 0) -> subprocess.Popen:
    env = dict(os.environ, IREVLA_LEARNER_TOKEN=TOKEN,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, str(HELPER), "--address", address, "--head-version", str(version),
                                "--record", str(record), "--hang-after", str(hang_after)], stdout=subprocess.PIPE,
                               env=env, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.1)[0]:
            line = process.stdout.readline()
            if line.startswith("READY"):
                return process
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"learner process did not start (exit {process.poll()})")


def recorded(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    return [json.loads(line)["digest"] for line in lines[:-1]]  # a line cut by SIGKILL has no newline: not counted


def observation(t: int) -> Observation:
    return Observation(images={"front": np.zeros((4, 4, 3), np.uint8)}, proprio=np.full(7, t, np.float32),
                       instruction="pick", timestamp=float(t))


def test_a_killed_learner_does_not_stop_the_actor_which_reconnects_and_loses_nothing(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    record1, record2 = tmp_path / "learner1.jsonl", tmp_path / "learner2.jsonl"
    # learner 1 stores 2 episodes (12 items) and dies before acknowledging the last it took: it must come again
    learner1 = start_learner(address, 1, record1, hang_after=12)
    learner2 = None
    link = ZmqLearnerLink(address, TOKEN, "arm-1", **FAST)
    recording, runner = RecordingLink(link), StubRunner()
    actor = RlActorCore(runner, recording)
    t = 0

    def act() -> np.ndarray:
        nonlocal t
        start = time.monotonic()
        action, _ = actor.step(observation(t))
        t += 1
        assert time.monotonic() - start < 0.5  # the control loop never waits on the network
        return action

    def episode(steps: int = 5) -> list[np.ndarray]:
        actor.begin_episode()
        actions = [act() for _ in range(steps)]
        actor.end_episode(observation(t), success=True)
        return actions

    try:
        wait_for(lambda: episode() and runner.version == 1 and len(recorded(record1)) >= 12,
                 what="head 1 applied and episodes at learner 1", interval=0)
        learner1.send_signal(signal.SIGKILL)
        learner1.wait(10)
        wait_for(lambda: episode() and not link.connected, what="the link to notice", interval=0)
        for _ in range(6):  # learner gone: the actor acts on with the last head and keeps buffering
            assert all(np.array_equal(action, head_params(1)["w"]) for action in episode()) and runner.version == 1
        assert link.stats()["buffered"] >= 36
        learner2 = start_learner(address, 2, record2)  # same port, new process
        wait_for(lambda: episode() and runner.version == 2, what="head 2 from the new learner", interval=0)
        assert link.flush(20), link.stats()
        stats = link.stats()
        assert link.connected and stats["connections"] >= 2 and stats["resent"] >= 1
        assert stats["buffered"] == 0 and stats["acked"] == stats["queued"] == len(recording.sent)
    finally:
        link.close()
        for process in (learner1, learner2):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    sent, got1, got2 = recording.sent, recorded(record1), recorded(record2)
    assert got1 == sent[:len(got1)]  # learner 1: in order, no duplicates
    first = len(sent) - len(got2)
    assert len(set(got2)) == len(got2) and got2 == sent[first:]  # learner 2: the rest, in order, once
    assert first < len(got1)  # nothing fell between the two: what 1 took but never acknowledged came again
    assert max(recording.durations) < 0.5


def test_a_wrong_token_is_refused(server):
    with ZmqLearnerLink(server.address, "not-the-token-" + "x" * 20, "intruder", **FAST) as link:
        send_episode(link, 0, 2)
        wait_for(lambda: server.stats()["rejected_reasons"].get("auth", 0) >= 3, what="auth rejections")
        assert server.poll(timeout_ms=200) == []
        stats = server.stats()
        assert stats["transitions"] == 0 and stats["sessions"] == 0 and stats["acks_sent"] == 0
        assert not link.connected and link.stats()["acked"] == 0 and link.stats()["buffered"] == 3


CODEC = Codec(TOKEN.encode())


def raw_signed(*frames: bytes) -> list[bytes]:
    return [*frames, mac_frames(TOKEN.encode(), frames)]


def episode_header(**fields) -> dict:
    return {"kind": "episode", "actor": "raw", "session": "s" * 32, "seq": 1, "episode": 0, "steps": 1,
            "success": False, **fields}


def episode_arrays(**changes) -> list:
    """The arrays of a one-step episode, as the wire carries them; `changes` replaces (dtype, shape) by name."""
    specs = {"step": ("int64", [1]), "intervention": ("bool", [1]), "policy_version": ("int64", [1]),
             "latent_tokens": ("float16", [1, 1, 2]), "latent_mask": ("bool", [1, 1]), "proprio": ("float32", [1, 3]),
             "action": ("float32", [1, 3]), "final_tokens": ("float16", [1, 2]), "final_mask": ("bool", [1]),
             "final_proprio": ("float32", [3]), **changes}
    return [({"name": name, "dtype": dtype, "shape": shape},
             bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)) for name, (dtype, shape) in specs.items()]


BAD_MESSAGES = [
    ("frames", [b"garbage"]),
    ("auth", [b"garbage", b"x" * 32]),
    ("auth", [b'{"v":2}', b"\x00" * 8, os.urandom(32)]),
    ("header", raw_signed(b"\xff\xfe not json")),
    ("version", raw_signed(b"[1, 2]")),
    ("version", raw_signed(b"{\"v\": 1, \"arrays\": []}")),
    ("dtype", raw_signed(json.dumps({"v": 2, "arrays": [{"name": "a", "dtype": "object", "shape": [1]}]}).encode(),
                         b"\x00" * 8)),
    ("dtype", raw_signed(json.dumps({"v": 2, "arrays": [{"name": "a", "dtype": ">f4", "shape": [1]}]}).encode(),
                         b"\x00" * 4)),
    ("bytes", raw_signed(json.dumps({"v": 2, "arrays": [{"name": "a", "dtype": "float32", "shape": [4]}]}).encode(),
                         b"\x00" * 15)),
    ("bytes", raw_signed(json.dumps({"v": 2, "arrays": [{"name": "a", "dtype": "bool", "shape": [2]}]}).encode(),
                         b"\x00\x07")),
    ("shape", raw_signed(json.dumps({"v": 2, "arrays": [{"name": "a", "dtype": "uint8", "shape": [-1]}]}).encode(),
                         b"")),
    ("frames", raw_signed(json.dumps({"v": 2, "arrays": [{"name": "a", "dtype": "uint8", "shape": [1]},
                                                         {"name": "b", "dtype": "uint8", "shape": [1]}]}).encode(),
                          b"\x01")),
    ("frames", raw_signed(b"{}", *[b""] * 17)),  # more arrays than max_arrays=16
    ("size", raw_signed(b"{}", b"\x00" * 400_000, b"\x00" * 400_000, b"\x00" * 400_000)),  # 1.2 MB > 1 MiB in all
    ("kind", CODEC.encode({"kind": "ack", "actor": "raw", "session": "s" * 32})),
    ("kind", CODEC.encode({"kind": "sync", "actor": "raw", "session": "s" * 32, "floor": 1, "head": -1},
                          episode_arrays()[:1])),  # a sync carries no arrays
    ("header", CODEC.encode({"kind": "sync", "actor": "raw", "session": "s" * 32, "floor": 0, "head": -1})),
    ("header", CODEC.encode(episode_header(seq=0), episode_arrays())),
    ("content", CODEC.encode(episode_header(), episode_arrays()[:7])),  # the end's arrays are missing
    ("content", CODEC.encode(episode_header(), episode_arrays(intervention=("uint8", [1])))),  # not a bool
    ("content", CODEC.encode(episode_header(), episode_arrays(proprio=("float32", [2, 3])))),  # 2 rows for 1 step
]


def test_garbage_and_oversized_messages_are_rejected_and_the_server_keeps_serving():
    with LearnerServer("tcp://127.0.0.1:*", TOKEN, max_message_bytes=1 << 20, max_arrays=16) as server:
        context = zmq.Context()
        raw = context.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(server.address)
        try:
            for reason, frames in BAD_MESSAGES:
                before = server.stats()["rejected_reasons"].get(reason, 0)
                raw.send_multipart(frames)
                wait_for(lambda: server.stats()["rejected_reasons"].get(reason, 0) > before,  # noqa: B023
                         what=f"a '{reason}' rejection")
            raw.send_multipart([b"\x00" * (2 << 20)])  # one frame over MAXMSGSIZE: ZeroMQ drops the peer
            with socket.create_connection(("127.0.0.1", int(server.address.rsplit(":", 1)[1]))) as tcp:
                tcp.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(4096))  # not even ZMTP
            with ZmqLearnerLink(server.address, TOKEN, "arm-1", max_message_bytes=1 << 20, max_arrays=16,
                                **FAST) as link:  # the same bounds as the server's
                sent = send_episode(link, 0, 5)
                got = drain(server, 6)
                assert [digest(r.item) for r in got] == [digest(item) for item in sent]
                assert link.flush(10)
        finally:
            raw.close(0)
            context.term()
        stats = server.stats()
        # >=: libzmq reads bytes that do not open with a ZMTP 3 greeting as ZMTP 1.0 frames: more garbage, rejected
        assert stats["rejected"] >= len(BAD_MESSAGES) and stats["internal_errors"] == 0
        assert stats["transitions"] == 5 and stats["actors"] == ["arm-1"]


def test_the_actor_rejects_what_a_fake_learner_sends():
    context = zmq.Context()
    fake = context.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    port = fake.bind_to_random_port("tcp://127.0.0.1")
    try:
        with ZmqLearnerLink(f"tcp://127.0.0.1:{port}", TOKEN, "arm-1", **FAST) as link:
            assert fake.poll(20_000)
            identity = fake.recv_multipart()[0]
            forged = Codec(b"someone-elses-token").encode({"kind": "head", "instance": "x", "version": 9},
                                                          [({"name": "w", "dtype": "float32", "shape": [1]}, bytes(4))])
            fake.send_multipart([identity, b"junk"])
            fake.send_multipart([identity, *forged])
            fake.send_multipart([identity, *CODEC.encode({"kind": "head", "instance": "x", "version": 9})])  # empty
            wait_for(lambda: link.stats()["rejected"] >= 3, what="3 rejections")
            assert link.stats()["rejected_reasons"] == {"frames": 1, "auth": 1, "content": 1}
            assert link.poll_head() is None and not link.connected and link.stats()["internal_errors"] == 0
    finally:
        fake.close(0)
        context.term()


def test_the_outbox_is_bounded_and_an_episode_is_checked_as_it_grows():
    with ZmqLearnerLink(f"tcp://127.0.0.1:{free_port()}", TOKEN, "arm-1", max_buffered=5, **FAST) as link:
        start = time.monotonic()
        for step in range(5):
            link.send_transition(transition(step))  # nobody listens: buffered, not blocking
        assert time.monotonic() - start < 1.0
        with pytest.raises(TransportError, match="max_buffered=5"):
            link.send_transition(transition(5))
        assert link.stats()["buffered"] == 5 and link.stats()["queued"] == 5
    with ZmqLearnerLink(f"tcp://127.0.0.1:{free_port()}", TOKEN, "arm-1", max_message_bytes=4096, **FAST) as link:
        with pytest.raises(TransportError, match="max_message_bytes=4096"):
            link.send_transition(transition(0, tokens=np.zeros((64, 64), np.float16), mask=np.ones(64, bool)))
        with pytest.raises(ValueError, match="latent tokens"):
            link.send_transition(transition(0, tokens=np.zeros((2, 3), np.int64), mask=np.ones(2, bool)))
        with pytest.raises(ValueError, match="does not match"):
            link.send_transition(transition(0, tokens=np.zeros((2, 3), np.float16), mask=np.ones(3, bool)))
        link.send_transition(transition(0, episode=4))
        with pytest.raises(ValueError, match="does not continue the open episode 4"):
            link.send_transition(transition(1, episode=5))
        with pytest.raises(ValueError, match=r"latent_tokens float16\(2, 6\).*latent_tokens float16\(5, 6\)"):
            link.send_transition(transition(1, episode=4, tokens=np.zeros((2, 6), np.float16), mask=np.ones(2, bool)))
        with pytest.raises(ValueError, match="holds 1 step"):
            link.send_episode_end(4, 2, False, FINAL, np.zeros(7, np.float32))
        assert link.stats()["open_steps"] == 1


def test_tokens_keys_and_addresses(tmp_path, monkeypatch):
    monkeypatch.delenv("IREVLA_LEARNER_TOKEN", raising=False)
    monkeypatch.delenv("IREVLA_LEARNER_TOKEN_FILE", raising=False)
    with pytest.raises(TransportError, match="no learner token"):
        load_token()
    with pytest.raises(TransportError, match="empty"):
        load_token("  ")
    monkeypatch.setenv("IREVLA_LEARNER_TOKEN", "")
    with pytest.raises(TransportError, match="empty"):
        LearnerServer("tcp://127.0.0.1:*")
    monkeypatch.setenv("IREVLA_LEARNER_TOKEN", TOKEN)
    assert load_token() == TOKEN.encode()
    path = tmp_path / "token"
    path.write_text(TOKEN[::-1] + "\n")
    monkeypatch.delenv("IREVLA_LEARNER_TOKEN")
    monkeypatch.setenv("IREVLA_LEARNER_TOKEN_FILE", str(path))
    assert load_token() == TOKEN[::-1].encode()
    monkeypatch.setenv("IREVLA_LEARNER_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(TransportError, match="missing"):
        load_token()
    for local in ("tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555", "ipc:///tmp/learner"):
        assert learner_auth(local, TOKEN).token == actor_auth(local, TOKEN).token == TOKEN.encode()
    # Address strings only: each is refused while parsing, before any socket exists (no traffic leaves loopback).
    for remote in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.10:5555", "tcp://eth0:5555"):
        with pytest.raises(TransportError, match="not loopback: give --curve-secret and --curve-clients"):
            learner_auth(remote, TOKEN)
        with pytest.raises(TransportError, match="not loopback: give curve_server_key and curve_secret"):
            actor_auth(remote, TOKEN)
    with pytest.raises(TransportError, match="learner binds tcp://0.0.0.0"):
        LearnerServer("tcp://0.0.0.0:*", TOKEN)
    with pytest.raises(TransportError, match="expected tcp"):
        learner_auth("udp://127.0.0.1:5555", TOKEN)
    keys = tmp_path / "keys"
    write_keys(keys, ["arm-1"])
    with pytest.raises(TransportError, match="go together"):
        learner_auth("tcp://127.0.0.1:5555", curve_secret=keys / "learner.key_secret")
    with pytest.raises(TransportError, match="holds no secret key"):
        actor_auth("tcp://127.0.0.1:5555", curve_server_key=keys / "learner.key", curve_secret=keys / "learner.key")
    with pytest.raises(TransportError, match="--curve-secret .*nope: not a readable key file"):
        learner_auth("tcp://127.0.0.1:5555", curve_secret=tmp_path / "nope", curve_clients=keys / "clients")
    with pytest.raises(TransportError, match="--curve-clients .*: expected a directory of actor public keys"):
        learner_auth("tcp://127.0.0.1:5555", curve_secret=keys / "learner.key_secret", curve_clients=tmp_path)
    assert issubclass(TransportError, UserError)  # the CLI prints its message on one line


# --- CURVE ------------------------------------------------------------------------------------------------------------

@pytest.fixture
def keys(tmp_path) -> Path:
    write_keys(tmp_path / "keys", ["arm-1", "arm-2"])
    return tmp_path / "keys"


def curve_server(keys: Path, secret: str = "learner.key_secret") -> LearnerServer:
    return LearnerServer("tcp://127.0.0.1:*", learner_auth("tcp://127.0.0.1:*", curve_secret=keys / secret,
                                                           curve_clients=keys / "clients"))


def curve_link(address: str, keys: Path, secret: Path, actor: str = "arm-1") -> ZmqLearnerLink:
    return ZmqLearnerLink(address, actor_auth(address, curve_server_key=keys / "learner.key", curve_secret=secret),
                          actor, **FAST)


def test_irevla_learner_keys_writes_key_pairs_with_private_secret_files(tmp_path, capsys):
    out = tmp_path / "keys"
    assert irevla_main(["learner", "keys", "--out", str(out), "--actor", "arm-1"]) == 0
    printed = capsys.readouterr().out
    assert "--curve-secret" in printed and "--curve-clients" in printed and "rl_actor.curve_secret" in printed
    assert sorted(path.name for path in out.glob("*.key_secret")) == ["arm-1.key_secret", "learner.key_secret"]
    for secret in out.glob("*.key_secret"):
        assert secret.stat().st_mode & 0o777 == 0o600
        assert zmq.auth.load_certificate(secret)[1] is not None
    for public in (out / "learner.key", out / "clients" / "arm-1.key"):
        assert zmq.auth.load_certificate(public)[1] is None  # public files hold no secret
    assert zmq.auth.load_certificate(out / "clients" / "arm-1.key")[0] == zmq.auth.load_certificate(
        out / "arm-1.key_secret")[0]
    before = (out / "learner.key_secret").read_bytes()
    assert irevla_main(["learner", "keys", "--out", str(out)]) == 2  # a user error: never replaces keys
    assert "already there" in capsys.readouterr().err and (out / "learner.key_secret").read_bytes() == before


def test_a_curve_link_over_loopback_carries_episodes_and_heads(keys):
    with curve_server(keys) as server, curve_link(server.address, keys, keys / "arm-1.key_secret") as link:
        server.publish_head(1, head_params(1))
        sent = send_episode(link, 0, 5, success=True)
        got = drain(server, 6)
        assert [digest(r.item) for r in got] == [digest(item) for item in sent]
        version, params = wait_for(link.poll_head, what="the head")
        assert version == 1 and np.array_equal(params["w"], head_params(1)["w"])
        assert link.flush(10) and link.connected and server.stats()["rejected"] == 0


def test_a_wrong_client_key_is_refused_and_the_learner_gets_nothing(keys, tmp_path):
    write_keys(tmp_path / "stranger", ["arm-1"])  # a well-formed key pair the learner never admitted
    with curve_server(keys) as server:
        server.publish_head(1, head_params(1))
        with curve_link(server.address, keys, tmp_path / "stranger" / "arm-1.key_secret") as link:
            send_episode(link, 0, 2)
            wait_for(lambda: server.stats()["rejected_reasons"].get("handshake", 0) >= 1, what="a refused handshake")
            time.sleep(0.5)
            assert server.poll(timeout_ms=100) == [] and server.stats()["messages"] == 0
            assert server.stats()["sessions"] == 0 and server.stats()["heads_sent"] == 0
            assert not link.connected and link.poll_head() is None and link.stats()["acked"] == 0


def test_an_impostor_learner_with_other_keys_gets_nothing_from_the_actor(keys, tmp_path):
    write_keys(tmp_path / "impostor", ["x"])
    (tmp_path / "impostor" / "clients" / "arm-1.key").write_bytes((keys / "clients" / "arm-1.key").read_bytes())
    with curve_server(tmp_path / "impostor") as impostor:  # admits arm-1's public key, but is not the learner
        impostor.publish_head(9, head_params(9))
        with curve_link(impostor.address, keys, keys / "arm-1.key_secret") as link:
            send_episode(link, 0, 2)
            wait_for(lambda: link.stats()["rejected_reasons"].get("handshake", 0) >= 1, what="a failed handshake")
            time.sleep(0.5)
            assert impostor.poll(timeout_ms=100) == [] and impostor.stats()["messages"] == 0
            assert link.poll_head() is None and not link.connected


def test_a_plain_text_peer_cannot_talk_to_a_curve_learner(keys):
    with curve_server(keys) as server:
        server.publish_head(1, head_params(1))
        with ZmqLearnerLink(server.address, TOKEN, "plain", **FAST) as link:  # the token, no CURVE
            send_episode(link, 0, 2)
            wait_for(lambda: server.stats()["rejected_reasons"].get("handshake", 0) >= 1, what="a refused handshake")
            time.sleep(0.5)
            assert server.poll(timeout_ms=100) == [] and server.stats()["messages"] == 0
            assert not link.connected and link.poll_head() is None
        with socket.create_connection(("127.0.0.1", int(server.address.rsplit(":", 1)[1]))) as tcp:
            tcp.sendall(os.urandom(4096))  # not even ZMTP
        time.sleep(0.3)
        assert server.stats()["messages"] == 0 and server.stats()["internal_errors"] == 0

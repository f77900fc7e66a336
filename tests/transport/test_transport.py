"""The actor <-> learner transport over real ZeroMQ sockets on 127.0.0.1: heads and transitions arrive intact, a killed
learner neither stops nor loses the actor's data, and wrong tokens, garbage and oversized messages are refused."""

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

from irevla.transport.messages import EpisodeEnd, Transition, pooled_latent  # noqa: E402
from irevla.transport.zmq_link import (  # noqa: E402
    LearnerServer,
    TransportError,
    ZmqLearnerLink,
    check_bind_address,
    encode_message,
    load_token,
    mac_frames,
)
from irevla.robot.rl_actor import RlActorCore  # noqa: E402
from irevla.spec import Observation  # noqa: E402

TOKEN = secrets.token_hex(32)
HELPER = Path(__file__).with_name("transport_learner_proc.py")
REPO = Path(__file__).resolve().parents[2]
FAST = {"heartbeat_s": 0.05, "ack_timeout_s": 1.0, "dead_after_s": 1.0, "max_backoff_s": 2.0}


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


@pytest.fixture
def server():
    with LearnerServer("tcp://127.0.0.1:*", token=TOKEN) as learner:
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


def test_transitions_and_episode_ends_arrive_in_order_from_two_actors(server):
    sent = {"arm-1": [], "arm-2": []}
    with (ZmqLearnerLink(server.address, TOKEN, "arm-1", **FAST) as arm1,
          ZmqLearnerLink(server.address, TOKEN, "arm-2", max_batch_items=3, **FAST) as arm2):
        for step in range(40):
            item = transition(step, intervention=step % 7 == 0)
            arm1.send_transition(item)
            sent["arm-1"].append(item)
            pooled_tokens, pooled_mask = pooled_latent(np.full(16, step, np.float32))  # a pooled latent: (1, D)
            item = transition(step, episode=3, tokens=pooled_tokens, mask=pooled_mask)
            arm2.send_transition(item)
            sent["arm-2"].append(item)
        for link in (arm1, arm2):
            episode = sent[link.actor_id][-1].episode
            final = (np.ones((2, 4), np.float16), np.array([True, False]))
            link.send_episode_end(episode, 40, link.actor_id == "arm-1", final, np.zeros(7, np.float32))
            sent[link.actor_id].append(EpisodeEnd(episode, 40, link.actor_id == "arm-1", *final,
                                                  np.zeros(7, np.float32)))
        got = drain(server, 82)
        assert arm1.flush(10) and arm2.flush(10)
        assert arm1.stats()["acked"] == 41 and arm2.stats()["buffered"] == 0
    assert len(got) == 82 and server.poll() == []
    for actor, items in sent.items():
        received = [r.item for r in got if r.actor == actor]
        assert [type(r) for r in received] == [type(s) for s in items]
        assert [digest(r) for r in received] == [digest(s) for s in items]  # same order, same bytes, same dtypes
    end = [r.item for r in got if isinstance(r.item, EpisodeEnd) and r.actor == "arm-1"][0]
    assert end.success is True and end.final_tokens.dtype == np.float16
    stats = server.stats()
    assert stats["transitions"] == 80 and stats["episode_ends"] == 2 and stats["rejected"] == 0
    assert stats["actors"] == ["arm-1", "arm-2"]


def test_a_learner_that_does_not_keep_up_pushes_back_and_loses_nothing():
    with LearnerServer("tcp://127.0.0.1:*", token=TOKEN, max_inbox_items=3) as server:
        with ZmqLearnerLink(server.address, TOKEN, "arm-1", max_batch_items=1, **FAST) as link:
            for step in range(10):
                link.send_transition(transition(step))
            wait_for(lambda: server.stats()["backpressure"] > 0, what="back-pressure")
            assert server.stats()["inbox_items"] == 3 and link.stats()["acked"] == 0  # taken != acknowledged
            got = drain(server, 10)
            assert [digest(r.item) for r in got] == [digest(transition(step)) for step in range(10)]
            assert link.flush(10) and server.stats()["transitions"] == 10


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


def start_learner(address: str, version: int, record: Path) -> subprocess.Popen:
    env = dict(os.environ, IREVLA_LEARNER_TOKEN=TOKEN,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, str(HELPER), "--address", address, "--head-version", str(version),
                                "--record", str(record)], stdout=subprocess.PIPE, env=env, text=True)
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
    learner1 = start_learner(address, 1, record1)
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

    try:
        actor.begin_episode()
        wait_for(lambda: act() is not None and runner.version == 1 and len(recorded(record1)) >= 20,
                 what="head 1 applied and transitions at learner 1", interval=0.005)
        learner1.send_signal(signal.SIGKILL)
        learner1.wait(10)
        wait_for(lambda: act() is not None and not link.connected, what="the link to notice", interval=0.005)
        for _ in range(30):  # learner gone: the actor acts on with the last head and keeps buffering
            assert np.array_equal(act(), head_params(1)["w"]) and runner.version == 1
        assert link.stats()["buffered"] >= 30
        learner2 = start_learner(address, 2, record2)  # same port, new process
        wait_for(lambda: act() is not None and runner.version == 2, what="head 2 from the new learner",
                 interval=0.005)
        actor.end_episode(observation(t), success=True)
        assert link.flush(20), link.stats()
        stats = link.stats()
        assert link.connected and stats["reconnects"] >= 1 and stats["learner_changes"] == 1
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
    assert first <= len(got1)  # nothing fell between the two (what 1 took but never acknowledged comes again)
    assert max(recording.durations) < 0.5


def test_a_wrong_token_is_refused(server):
    with ZmqLearnerLink(server.address, "not-the-token-" + "x" * 20, "intruder", **FAST) as link:
        link.send_transition(transition(0))
        wait_for(lambda: server.stats()["rejected_reasons"].get("auth", 0) >= 3, what="auth rejections")
        assert server.poll(timeout_ms=200) == []
        stats = server.stats()
        assert stats["transitions"] == 0 and stats["sessions"] == 0 and stats["acks_sent"] == 0
        assert not link.connected and link.stats()["acked"] == 0 and link.stats()["buffered"] == 1


def signed(header: dict, arrays=()) -> list[bytes]:
    return encode_message(TOKEN.encode(), header, arrays)


def raw_signed(*frames: bytes) -> list[bytes]:
    return [*frames, mac_frames(TOKEN.encode(), frames)]


def batch_header(**fields) -> dict:
    return {"kind": "batch", "actor": "raw", "session": "s" * 32, "seq": 1, "floor": 1, "head": -1, **fields}


BAD_MESSAGES = [
    ("frames", [b"garbage"]),
    ("auth", [b"garbage", b"x" * 32]),
    ("auth", [b'{"v":1}', b"\x00" * 8, os.urandom(32)]),
    ("header", raw_signed(b"\xff\xfe not json")),
    ("header", raw_signed(b"[1, 2]")),
    ("version", raw_signed(b"{\"v\": 2, \"arrays\": []}")),
    ("dtype", raw_signed(json.dumps({"v": 1, "arrays": [{"name": "a", "dtype": "object", "shape": [1]}]}).encode(),
                         b"\x00" * 8)),
    ("dtype", raw_signed(json.dumps({"v": 1, "arrays": [{"name": "a", "dtype": ">f4", "shape": [1]}]}).encode(),
                         b"\x00" * 4)),
    ("bytes", raw_signed(json.dumps({"v": 1, "arrays": [{"name": "a", "dtype": "float32", "shape": [4]}]}).encode(),
                         b"\x00" * 15)),
    ("bytes", raw_signed(json.dumps({"v": 1, "arrays": [{"name": "a", "dtype": "bool", "shape": [2]}]}).encode(),
                         b"\x00\x07")),
    ("shape", raw_signed(json.dumps({"v": 1, "arrays": [{"name": "a", "dtype": "uint8", "shape": [-1]}]}).encode(),
                         b"")),
    ("frames", raw_signed(json.dumps({"v": 1, "arrays": [{"name": "a", "dtype": "uint8", "shape": [1]},
                                                         {"name": "b", "dtype": "uint8", "shape": [1]}]}).encode(),
                          b"\x01")),
    ("frames", raw_signed(b"{}", *[b""] * 9)),  # more arrays than max_arrays=8
    ("size", raw_signed(b"{}", b"\x00" * 400_000, b"\x00" * 400_000, b"\x00" * 400_000)),  # 1.2 MB > 1 MiB in all
    ("kind", signed({"kind": "ack", "actor": "raw", "session": "s" * 32})),
    ("header", signed(batch_header(floor=0, items=[{"type": "transition"}]))),
    ("content", signed(batch_header(items=[{"type": "transition", "episode": 0, "step": 0, "intervention": False,
                                            "policy_version": 0}]))),  # its arrays are missing
    ("content", signed(batch_header(items=[{"type": "transition", "episode": 0, "step": 0, "intervention": 1,
                                            "policy_version": 0}]),
                       [({"name": f"0/{name}", "dtype": dtype, "shape": shape}, bytes(size))
                        for name, dtype, shape, size in [("latent_tokens", "float16", [1, 2], 4),
                                                          ("latent_mask", "bool", [1], 1),
                                                          ("proprio", "float32", [1], 4),
                                                          ("action", "float32", [1], 4)]])),  # intervention not a bool
]


def test_garbage_and_oversized_messages_are_rejected_and_the_server_keeps_serving():
    with LearnerServer("tcp://127.0.0.1:*", token=TOKEN, max_message_bytes=1 << 20, max_arrays=8) as server:
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
            with ZmqLearnerLink(server.address, TOKEN, "arm-1", max_message_bytes=1 << 20, max_arrays=8,
                                **FAST) as link:  # the same bounds as the server's
                for step in range(5):
                    link.send_transition(transition(step))
                got = drain(server, 5)
                assert [digest(r.item) for r in got] == [digest(transition(step)) for step in range(5)]
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
            forged = encode_message(b"someone-elses-token", {"kind": "head", "instance": "x", "version": 9},
                                    [({"name": "w", "dtype": "float32", "shape": [1]}, bytes(4))])
            fake.send_multipart([identity, b"junk"])
            fake.send_multipart([identity, *forged])
            fake.send_multipart([identity, *signed({"kind": "head", "instance": "x", "version": 9})])  # no params
            wait_for(lambda: link.stats()["rejected"] >= 3, what="3 rejections")
            assert link.stats()["rejected_reasons"] == {"frames": 1, "auth": 1, "content": 1}
            assert link.poll_head() is None and not link.connected and link.stats()["internal_errors"] == 0
    finally:
        fake.close(0)
        context.term()


def test_the_outbox_is_bounded_and_says_so():
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


def test_tokens_and_bind_addresses(tmp_path, monkeypatch):
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
    path.chmod(0o600)
    assert load_token(path=path) == TOKEN[::-1].encode()
    monkeypatch.delenv("IREVLA_LEARNER_TOKEN")
    monkeypatch.setenv("IREVLA_LEARNER_TOKEN_FILE", str(path))
    assert load_token() == TOKEN[::-1].encode()
    for local in ("tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555", "ipc:///tmp/learner"):
        check_bind_address(local)
    for remote in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.10:5555", "tcp://eth0:5555"):
        with pytest.raises(ValueError, match="allow_remote"):
            check_bind_address(remote)
        check_bind_address(remote, allow_remote=True)
    with pytest.raises(ValueError, match="allow_remote"):
        LearnerServer("tcp://0.0.0.0:*", token=TOKEN)
    with pytest.raises(ValueError, match="expected tcp"):
        check_bind_address("udp://127.0.0.1:5555")

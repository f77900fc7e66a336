"""The learner's end: `LearnerServer`, a ROUTER that takes whole episodes from any number of actors, acknowledges each
once the learner process has stored it, and serves the latest head.

Each actor session (a random id per `ZmqLearnerLink`) numbers its episodes 1, 2, ...; only the next one expected is
taken (a duplicate, or one past a gap, is dropped and the actor resends), so within one learner process every episode
arrives once and in order. The ``sync`` opening each connection carries the actor's floor -- everything below it some
learner acknowledged -- so a restarted learner starts where its predecessor's acknowledgements ended.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from irevla.transport import wire
from irevla.transport.messages import EpisodeEnd, Received, Transition

log = logging.getLogger(__name__)


def unpack_episode(actor: str, header: Mapping, arrays: Mapping[str, np.ndarray]) -> list[Received]:
    """An ``episode`` message's transitions, then its end; RejectedMessage("content") naming what is wrong."""
    try:
        if set(arrays) != (expected := {*wire.STEP_SCALARS, *wire.STEP_ARRAYS, *wire.END_ARRAYS}):
            raise ValueError(f"arrays {sorted(arrays)}, expected {sorted(expected)}")
        steps = len(arrays["step"]) if arrays["step"].ndim else 0
        if not steps or any(arrays[name].shape[:1] != (steps,) for name in (*wire.STEP_SCALARS, *wire.STEP_ARRAYS)):
            raise ValueError("step arrays: expected one row per step, at least one step")
        columns = {name: arrays[name].tolist() if name in wire.STEP_SCALARS else arrays[name]
                   for name in (*wire.STEP_SCALARS, *wire.STEP_ARRAYS)}
        episode = wire.header_field(header, "episode")
        items = [Transition(episode=episode, **{name: column[i] for name, column in columns.items()})
                 for i in range(steps)]
        items.append(EpisodeEnd(episode, wire.header_field(header, "steps"), wire.header_field(header, "success", bool),
                                *(arrays[name] for name in wire.END_ARRAYS)))
        for item in items:
            item.validate()
    except ValueError as error:
        raise wire.RejectedMessage("content", str(error)) from None
    return [Received(actor, item) for item in items]


@dataclass
class _Session:
    actor: str
    identity: bytes  # the ROUTER's id of the actor's current connection
    expected: int = 1  # the next episode taken
    acked: int = 0  # the highest episode the learner has stored
    have_head: int = -1
    head_sent: int = -1  # on the current connection
    ack_due: bool = False


class LearnerServer:
    """``poll(timeout_ms)`` returns the episodes received since the last call, each as its `Received` transitions
    then its end; the next ``poll`` (or `commit`) acknowledges them, so store them before polling again.
    ``publish_head(version, params)`` replaces the head actors are sent (latest only; versions must increase).
    `auth`: a token (default $IREVLA_LEARNER_TOKEN...) or an `Auth` from `wire.learner_auth` (CURVE; required off
    loopback). Episodes wait in the inbox up to `max_inbox_items` / `max_inbox_bytes`; beyond, actors resend later."""

    def __init__(self, bind: str = wire.DEFAULT_ADDRESS, auth: wire.Auth | str | bytes | None = None, *,
                 max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, max_arrays: int = wire.DEFAULT_MAX_ARRAYS,
                 max_inbox_items: int = 100_000, max_inbox_bytes: int = 4 << 30, max_sessions: int = 1024) -> None:
        auth = auth if isinstance(auth, wire.Auth) else wire.learner_auth(bind, auth)
        wire.check_address(bind, auth, "learner")
        self._codec = wire.Codec(auth.token, int(max_message_bytes), int(max_arrays))
        self.max_inbox_items, self.max_inbox_bytes, self.max_sessions = max_inbox_items, max_inbox_bytes, max_sessions
        self._context, self._authenticator = zmq.Context(), None
        if auth.clients is not None:  # ZAP: the CURVE handshake admits only the actor keys in that directory
            self._authenticator = ThreadAuthenticator(self._context)
            self._authenticator.start()
            self._authenticator.configure_curve(domain="*", location=auth.clients)
        self._socket, self._monitor = wire.open_socket(self._context, zmq.ROUTER, bind, auth, int(max_message_bytes))
        try:
            self._socket.bind(bind)
        except zmq.ZMQError as error:
            self.close()
            raise wire.TransportError(f"learner cannot bind {bind} (--bind): {error}") from None
        self.address = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Condition()
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()  # oldest first
        self._inbox: collections.deque[tuple[str, int, list[Received], int]] = collections.deque()
        self._inbox_items = self._inbox_bytes = 0
        self._returned: list[tuple[str, int]] = []
        self._head: tuple[int, list[bytes]] | None = None
        self._counts = collections.Counter(dict.fromkeys(("messages", "episodes", "transitions", "syncs", "duplicates",
                                                          "out_of_order", "backpressure", "acks_sent", "heads_sent",
                                                          "internal_errors"), 0))
        self._rejected: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=wire.io_loop, name="learner-transport", daemon=True, args=(
            "learner transport", self._stop, self._counts, self._socket, self._monitor, self._on_event, self._on_frames,
            self._send_due))
        self._thread.start()
        log.info("learner transport listening on %s (%s)", self.address, "token" if auth.token else "CURVE")

    def poll(self, timeout_ms: float = 0) -> list[Received]:
        """Episodes received since the last call (waiting up to `timeout_ms` for one); acknowledges the last call's."""
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        with self._lock:
            self._commit_locked()
            while not self._inbox and not self._stop.is_set() and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            out: list[Received] = []
            while self._inbox:
                session, seq, received, nbytes = self._inbox.popleft()
                self._inbox_items -= len(received)
                self._inbox_bytes -= nbytes
                self._returned.append((session, seq))
                out.extend(received)
            return out

    def commit(self) -> None:
        """Acknowledge everything `poll` has returned so far (poll does this itself on its next call)."""
        with self._lock:
            self._commit_locked()

    def publish_head(self, version: int, params: Mapping[str, np.ndarray]) -> None:
        """Make (version, params) the head actors are sent; older versions are dropped, never queued."""
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0 or not params:
            raise ValueError(f"head version {version!r}: expected an int >= 0 and parameters")
        frames = self._codec.encode({"kind": "head", "version": int(version)},
                                    [wire.encode_array(name, value) for name, value in params.items()])
        if sum(len(frame) for frame in frames) > self._codec.max_message_bytes or len(params) > self._codec.max_arrays:
            raise ValueError(f"head version {version}: larger than one message may be (max_message_bytes, max_arrays)")
        with self._lock:
            if self._head is not None and version <= self._head[0]:
                raise ValueError(f"head version {version}: not newer than the published {self._head[0]}")
            self._head = (int(version), frames)

    def stats(self) -> dict:
        with self._lock:
            return {**self._counts, "rejected": sum(self._rejected.values()), "rejected_reasons": dict(self._rejected),
                    "sessions": len(self._sessions), "actors": sorted({s.actor for s in self._sessions.values()}),
                    "inbox_items": self._inbox_items, "inbox_bytes": self._inbox_bytes,
                    "head_version": None if self._head is None else self._head[0], "address": self.address}

    def close(self) -> None:
        """Stop serving (nothing further is acknowledged) and release the port."""
        if hasattr(self, "_stop") and not self._stop.is_set():
            self._stop.set()
            with self._lock:
                self._lock.notify_all()
            self._thread.join()
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.destroy(linger=0)

    def __enter__(self) -> LearnerServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the I/O thread owns the sockets --

    def _commit_locked(self) -> None:
        for session_id, seq in self._returned:
            session = self._sessions.get(session_id)
            if session is not None and seq > session.acked:
                session.acked, session.ack_due = seq, True
        self._returned.clear()

    def _on_event(self, event: int) -> None:
        if event & wire.HANDSHAKE_FAILED:  # not one byte of that peer got through
            with self._lock:
                wire.note_rejection(self._rejected, "learner transport", wire.RejectedMessage(
                    "handshake", f"{zmq.Event(event).name}: no CURVE, an unknown key, or not ZeroMQ"), "a peer")

    def _on_frames(self, frames: list) -> None:
        self._counts["messages"] += 1
        try:
            header, arrays = self._codec.decode([frame.buffer for frame in frames[1:]])
            kind, actor = header.get("kind"), wire.header_field(header, "actor", str)
            session_id = wire.header_field(header, "session", str)
            if kind == "episode":
                seq, received = wire.header_field(header, "seq", minimum=1), unpack_episode(actor, header, arrays)
                nbytes = sum(array.nbytes for array in arrays.values())
            elif kind == "sync" and not arrays:
                floor = wire.header_field(header, "floor", minimum=1)
                have_head = wire.header_field(header, "head", minimum=-1)
            else:
                raise wire.RejectedMessage("kind", f"{kind!r:.40} with {len(arrays)} arrays is not an actor message")
        except wire.RejectedMessage as rejection:
            try:
                peer = frames[-1].get("Peer-Address")
            except zmq.ZMQError:  # not a tcp:// peer
                peer = "a local peer"
            with self._lock:
                wire.note_rejection(self._rejected, "learner transport", rejection, peer)
            return
        with self._lock:
            session = self._sessions.setdefault(session_id, _Session(actor, frames[0].bytes))
            self._sessions.move_to_end(session_id)
            if len(self._sessions) > self.max_sessions:  # actors that restarted long ago
                self._sessions.popitem(last=False)
            if session.identity != frames[0].bytes:  # a new connection: what went out on the old one may be lost
                session.identity, session.head_sent = frames[0].bytes, -1
            if kind == "sync":  # below the floor: acknowledged by this or an earlier learner
                self._counts["syncs"] += 1
                session.expected, session.acked = max(session.expected, floor), max(session.acked, floor - 1)
                session.have_head = max(session.have_head, have_head)
            elif seq != session.expected:
                self._counts["duplicates" if seq < session.expected else "out_of_order"] += 1
            elif self._inbox and (self._inbox_items + len(received) > self.max_inbox_items
                                  or self._inbox_bytes + nbytes > self.max_inbox_bytes):
                self._counts["backpressure"] += 1  # not taken: the actor keeps it and resends
            else:
                self._inbox.append((session_id, seq, received, nbytes))
                self._inbox_items += len(received)
                self._inbox_bytes += nbytes
                session.expected += 1
                self._counts.update(episodes=1, transitions=len(received) - 1)
                self._lock.notify_all()
            session.ack_due = True  # every message is answered: the actor learns what this learner has

    def _send_due(self) -> None:
        """Acknowledgements (what this learner has received, and stored) and heads actors do not have yet."""
        outgoing = []
        with self._lock:
            for session_id, session in self._sessions.items():
                if session.ack_due:
                    session.ack_due = False
                    outgoing.append((session.identity, self._codec.encode({
                        "kind": "ack", "session": session_id, "acked": session.acked,
                        "received": session.expected - 1}), "acks_sent"))
                if self._head is not None and max(session.have_head, session.head_sent) < self._head[0]:
                    session.head_sent = self._head[0]
                    outgoing.append((session.identity, self._head[1], "heads_sent"))
        for identity, frames, counter in outgoing:
            try:
                self._socket.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
                self._counts[counter] += 1
            except zmq.Again:  # the actor is not reading; its next sync asks again
                pass

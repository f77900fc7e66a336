"""The actor's end: `ZmqLearnerLink`, a `LearnerLink` over a DEALER -- whole episodes out, heads in.

The control loop never waits on the network: `send_transition` checks and keeps a copy of the open episode's step,
`send_episode_end` packs the episode (each field stacked over the steps) into one message and queues it. A background
thread sends, and keeps each episode until the learner acknowledges it (= has stored it): it resends what the learner
has not received after `ack_timeout_s`, and everything unacknowledged on each new connection -- to the same learner
after a break, or to a restarted one (at least once). Connections are ZeroMQ's: its heartbeats drop a silent one after
`dead_after_s` and it reconnects with backoff up to `max_backoff_s`; a socket monitor tells the link when to resend.
"""

from __future__ import annotations

import collections
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import zmq

from irevla.transport import wire
from irevla.transport.messages import EpisodeEnd, Transition

log = logging.getLogger(__name__)


def _layout(step: Transition) -> str:
    return ", ".join(f"{name} {getattr(step, name).dtype}{getattr(step, name).shape}" for name in wire.STEP_ARRAYS)


@dataclass
class _Episode:
    seq: int
    frames: list[bytes]
    items: int  # transitions + the end
    nbytes: int
    sent_at: float | None = None  # None: send at the next chance
    sends: int = 0


class ZmqLearnerLink:
    """An actor's `LearnerLink` to a `LearnerServer` at `address` (e.g. ``tcp://127.0.0.1:5555``).

    `auth`: a token (default $IREVLA_LEARNER_TOKEN or the file named by $IREVLA_LEARNER_TOKEN_FILE) or an `Auth` from
    `wire.actor_auth` (CURVE; required for a learner beyond loopback). Unacknowledged items, the open episode's
    included, are bounded by `max_buffered` / `max_buffered_bytes`, and an episode by one message (`max_message_bytes`);
    past them `send_*` raises `TransportError` naming the bound (it never blocks, never drops silently).
    """

    def __init__(self, address: str = wire.DEFAULT_ADDRESS, auth: wire.Auth | str | bytes | None = None,
                 actor_id: str = "actor-0", *, max_buffered: int = 10_000, max_buffered_bytes: int = 1 << 30,
                 max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES, max_arrays: int = wire.DEFAULT_MAX_ARRAYS,
                 heartbeat_s: float = 1.0, ack_timeout_s: float = 5.0, dead_after_s: float = 5.0,
                 max_backoff_s: float = 30.0) -> None:
        auth = auth if isinstance(auth, wire.Auth) else wire.actor_auth(address, auth)
        wire.check_address(address, auth, "actor")
        if not (isinstance(actor_id, str) and 0 < len(actor_id) <= 200 and actor_id.isprintable()):
            raise ValueError(f"actor_id: expected 1..200 printable characters, got {actor_id!r:.80}")
        self.address, self.actor_id, self.session = address, actor_id, secrets.token_hex(16)
        self.max_buffered, self.max_buffered_bytes, self.ack_timeout_s = max_buffered, max_buffered_bytes, ack_timeout_s
        self._codec = wire.Codec(auth.token, int(max_message_bytes), int(max_arrays))
        self._lock = threading.Lock()
        self._open: list[Transition] = []  # the open episode's steps
        self._open_bytes = self._pending_items = self._pending_bytes = 0  # pending: the open episode + the outbox
        self._outbox: collections.deque[_Episode] = collections.deque()  # ended, not yet acknowledged
        self._next_seq, self._head, self._have_head, self._received = 1, None, -1, 0
        self._heard, self._need_sync, self._last_heard, self._last_sync = False, False, -math.inf, -math.inf
        self._counts = collections.Counter(dict.fromkeys(("queued", "sent", "acked", "resent", "syncs", "connections",
                                                          "heads_received", "internal_errors"), 0))
        self._rejected: collections.Counter = collections.Counter()
        self._closed = False
        self._context = zmq.Context()
        self._socket, self._monitor = wire.open_socket(self._context, zmq.DEALER, address, auth,
                                                       int(max_message_bytes), heartbeat_s, dead_after_s)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)  # queue only to a live connection: the rest stays in the outbox
        self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, int(max_backoff_s * 1000))
        try:
            self._socket.connect(address)
        except zmq.ZMQError as error:
            self._context.destroy(linger=0)
            raise wire.TransportError(f"learner link {actor_id!r}: cannot connect to {address!r}: {error}") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=wire.io_loop, name=f"learner-link-{actor_id}", daemon=True, args=(
            f"learner link {actor_id!r}", self._stop, self._counts, self._socket, self._monitor, self._on_event,
            self._on_frames, self._send_due))
        self._thread.start()

    def send_transition(self, transition: Transition) -> None:
        """Keep a copy of one step of the open episode (a step of another one: ValueError -- end the open one)."""
        transition.validate()
        step = replace(transition, step=int(transition.step), intervention=bool(transition.intervention),
                       policy_version=int(transition.policy_version),
                       **{name: np.array(getattr(transition, name)) for name in wire.STEP_ARRAYS})  # caller may reuse
        nbytes = sum(getattr(step, name).nbytes for name in wire.STEP_ARRAYS) + 17  # + the step's scalars
        with self._lock:
            self._check_not_closed()
            if self._open and (step.episode, _layout(step)) != (self._open[0].episode, _layout(self._open[0])):
                raise ValueError(f"step {step.step} of episode {step.episode} ({_layout(step)}) does not continue the "
                                 f"open episode {self._open[0].episode} ({_layout(self._open[0])}): end that one "
                                 "first; the steps of one episode travel stacked, so their arrays must match")
            if self._open_bytes + nbytes + 1024 > self._codec.max_message_bytes:  # + the header, roughly
                raise wire.TransportError(f"episode {step.episode} reaches {self._open_bytes + nbytes} bytes at step "
                                     f"{step.step}, more than one message holds (max_message_bytes="
                                     f"{self._codec.max_message_bytes}): pool latents, or raise it on both ends")
            self._reserve(1, nbytes)
            self._open.append(step)
            self._open_bytes += nbytes

    def send_episode_end(self, episode: int, steps: int, success: bool, final_latent: tuple[np.ndarray, np.ndarray],
                         final_proprio: np.ndarray) -> None:
        """End the open episode: it goes to the learner as one message."""
        end = EpisodeEnd(episode, steps, success, *final_latent, final_proprio)
        end.validate()
        with self._lock:
            self._check_not_closed()
            if not self._open or self._open[0].episode != episode or len(self._open) != steps:
                raise ValueError(f"end of episode {episode} after {steps} steps, but the link holds {len(self._open)} "
                                 f"step(s) of episode {self._open[0].episode if self._open else '-'}")
            arrays = [wire.encode_array(name, np.stack([getattr(step, name) for step in self._open]))
                      for name in (*wire.STEP_SCALARS, *wire.STEP_ARRAYS)]
            arrays += [wire.encode_array(name, getattr(end, name)) for name in wire.END_ARRAYS]
            frames = self._codec.encode({"kind": "episode", "actor": self.actor_id, "session": self.session,
                                         "seq": self._next_seq, "episode": int(episode), "steps": int(steps),
                                         "success": bool(success)}, arrays)
            if (nbytes := sum(len(frame) for frame in frames)) > self._codec.max_message_bytes:
                raise wire.TransportError(f"episode {episode}: {nbytes} bytes, more than one message holds "
                                     f"(max_message_bytes={self._codec.max_message_bytes})")
            self._reserve(1, nbytes - self._open_bytes)
            self._outbox.append(_Episode(self._next_seq, frames, steps + 1, nbytes))
            self._next_seq, self._open, self._open_bytes = self._next_seq + 1, [], 0

    def poll_head(self) -> tuple[int, dict[str, np.ndarray]] | None:
        """The newest head (version, parameters) not returned before, or None."""
        with self._lock:
            head, self._head = self._head, None
        return head

    @property
    def connected(self) -> bool:
        """Whether a connection is up and the learner on it has answered (a valid, authenticated message)."""
        return self._heard

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until the learner has acknowledged every ended episode; True if it has."""
        deadline = time.monotonic() + timeout_s
        while self._outbox and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._outbox

    def stats(self) -> dict:
        with self._lock:
            return {**self._counts, "buffered": self._pending_items, "buffered_bytes": self._pending_bytes,
                    "open_steps": len(self._open), "rejected": sum(self._rejected.values()),
                    "rejected_reasons": dict(self._rejected), "connected": self._heard, "session": self.session}

    def close(self, flush_timeout_s: float = 0.0) -> None:
        """Stop, after waiting up to `flush_timeout_s` for acknowledgements. What is still unacknowledged, and an
        episode never ended, is lost with this process; the log says how much."""
        if self._closed:
            return
        self.flush(flush_timeout_s)
        self._closed = True
        self._stop.set()
        self._thread.join()
        self._context.destroy(linger=0)
        if self._pending_items:
            log.warning("learner link %r closed with %d unacknowledged item(s), %d of them in the open episode",
                        self.actor_id, self._pending_items, len(self._open))

    def __enter__(self) -> ZmqLearnerLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_not_closed(self) -> None:
        if self._closed:
            raise wire.TransportError(f"learner link {self.actor_id!r} is closed")

    def _reserve(self, items: int, nbytes: int) -> None:
        if self._pending_items + items > self.max_buffered or self._pending_bytes + nbytes > self.max_buffered_bytes:
            quiet = ("never answered" if self._last_heard == -math.inf
                     else f"last answered {time.monotonic() - self._last_heard:.0f} s ago")
            raise wire.TransportError(
                f"learner link {self.actor_id!r}: outbox full: {self._pending_items} item(s), {self._pending_bytes} "
                f"bytes not yet acknowledged (max_buffered={self.max_buffered}, max_buffered_bytes="
                f"{self.max_buffered_bytes}); the learner at {self.address} {quiet}")
        self._pending_items += items
        self._pending_bytes += nbytes
        self._counts["queued"] += items

    # -- the I/O thread owns the sockets --

    def _on_event(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # a new connection: what the last one carried may be lost
            self._counts["connections"] += 1
            self._need_sync = True
            with self._lock:
                for episode in self._outbox:
                    episode.sent_at = None
        elif event == zmq.EVENT_DISCONNECTED:
            if self._heard:
                log.warning("learner link %r: lost the learner at %s; keeping %d unacknowledged item(s)",
                            self.actor_id, self.address, self._pending_items)
            self._heard = False
        else:
            self._reject(wire.RejectedMessage("handshake", f"{zmq.Event(event).name}: a wrong CURVE key on either "
                                              "side, or not a learner"))

    def _on_frames(self, frames: list) -> None:
        try:
            header, arrays = self._codec.decode([frame.buffer for frame in frames])
            kind = header.get("kind")
            if kind == "ack" and wire.header_field(header, "session", str) == self.session:
                acked, self._received = wire.header_field(header, "acked"), wire.header_field(header, "received")
            elif kind == "head" and arrays:
                version = wire.header_field(header, "version")
            else:
                raise wire.RejectedMessage("content", f"{kind!r:.40}: not an ack for this session, nor a head")
        except wire.RejectedMessage as rejection:
            self._reject(rejection)
            return
        if not self._heard:
            log.info("learner link %r: connected to %s", self.actor_id, self.address)
        self._heard, self._last_heard = True, time.monotonic()
        with self._lock:
            if kind == "head" and version > self._have_head:
                self._head, self._have_head = (version, arrays), version
                self._counts["heads_received"] += 1
            while kind == "ack" and self._outbox and self._outbox[0].seq <= acked:
                episode = self._outbox.popleft()
                self._pending_items -= episode.items
                self._pending_bytes -= episode.nbytes
                self._counts["acked"] += episode.items

    def _reject(self, rejection: wire.RejectedMessage) -> None:
        with self._lock:
            wire.note_rejection(self._rejected, f"learner link {self.actor_id!r}", rejection, self.address)

    def _send_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            pending = list(self._outbox)
            floor = pending[0].seq if pending else self._next_seq  # everything below is acknowledged
        # a sync opens each connection, and asks again when the learner has been quiet about what is pending
        if self._need_sync or (pending and now - max(self._last_heard, self._last_sync) > self.ack_timeout_s):
            if self._try_send(self._codec.encode({"kind": "sync", "actor": self.actor_id, "session": self.session,
                                                  "floor": floor, "head": self._have_head})):
                self._need_sync, self._last_sync = False, now
                self._counts["syncs"] += 1
        for episode in pending:
            if episode.sent_at is None or (episode.seq > self._received and now - episode.sent_at > self.ack_timeout_s):
                if not self._try_send(episode.frames):
                    return  # no connection (IMMEDIATE) or a full pipe: the next round tries again
                self._counts.update({"resent": 1} if episode.sends else {"sent": episode.items})
                episode.sent_at, episode.sends = now, episode.sends + 1

    def _try_send(self, frames: list[bytes]) -> bool:
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

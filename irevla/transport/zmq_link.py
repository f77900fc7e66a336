"""The actor <-> learner transport of stage-1 RL, over ZeroMQ: transitions go actor -> learner, heads learner -> actor.

The learner (`LearnerServer`, a ROUTER socket) runs in its own process, possibly on another machine; each actor
(`ZmqLearnerLink`, a DEALER socket, implementing `irevla.transport.messages.LearnerLink`) feeds it. Both sides do their
socket I/O on a background thread, so the actor's control loop and the learner's gradient steps never wait on the
network, and heartbeats and acknowledgements keep flowing while either is busy.

Wire format (v1), one ZeroMQ multipart message per unit, no pickle anywhere::

    [header: UTF-8 JSON {"v": 1, "kind", "actor", "seq", "arrays": [{"name", "dtype", "shape"}, ...], ...},
     one frame per array: its raw C-contiguous little-endian bytes,
     HMAC-SHA256(token, for each previous frame: 8-byte big-endian length + bytes)]

Kinds: ``batch`` (actor: several transitions / episode ends, numbered by ``seq``), ``heartbeat`` (actor), ``ack`` and
``head`` (learner). Dtypes are whitelisted (`WIRE_DTYPES`), every frame's length must equal dtype size x shape, and
message size and array count are bounded. A message that fails any check is dropped, logged (rate-limited) and
counted in ``stats()["rejected"]`` by reason; nothing a peer sends can raise out of the I/O thread. The MAC is checked
before the header is parsed, so a peer without the token gets nothing parsed and no reply.

Delivery: each actor numbers its batches per session (a random id per link instance). The learner accepts them in
order only (go-back-N), drops duplicates of what it already has, and acknowledges a batch once the learner process
has taken it with `LearnerServer.poll` and called ``poll`` (or `LearnerServer.commit`) again -- i.e. after storing
it. The actor keeps every unacknowledged item and resends after a timeout, after a reconnect, or to a new learner
instance, so nothing collected is lost while the actor lives and its outbox bound holds. Across a learner restart,
items the dead learner had taken but not yet acknowledged are delivered again (at-least-once); within one learner
process delivery is exactly-once and in order. Heads: the learner keeps only the latest; an actor is sent the newest
version it does not have. docs/overnight.md ("Actor/learner transport") is the user's guide.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import zmq
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("irevla.transport.zmq_link needs pyzmq: pip install 'irevla[learner]'") from error

from irevla.transport.messages import EpisodeEnd, Received, Transition

log = logging.getLogger(__name__)

WIRE_VERSION = 1
TOKEN_ENV = "IREVLA_LEARNER_TOKEN"
TOKEN_FILE_ENV = "IREVLA_LEARNER_TOKEN_FILE"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_MAX_ARRAYS = 1024
MAC_BYTES = 32
MAX_NDIM = 8
MAX_NAME_CHARS = 200
MAX_ID_CHARS = 128
# Names as numpy spells them; on the wire always little-endian.
WIRE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in
               ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")}
TRANSITION_ARRAYS = ("latent_tokens", "latent_mask", "proprio", "action")
EPISODE_END_ARRAYS = ("final_tokens", "final_mask", "final_proprio")
# Conservative header cost used to keep batches under the message bound.
_HEADER_BASE_BYTES = 1024
_HEADER_ITEM_BYTES = 256
_HEADER_ARRAY_BYTES = 256
_IO_POLL_MS = 10
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
# Every counter exists from the start, so stats() can copy them while the I/O thread counts.
_SERVER_COUNTERS = ("messages", "batches", "transitions", "episode_ends", "heartbeats", "duplicates", "out_of_order",
                    "backpressure", "acks_sent", "heads_sent", "send_dropped", "internal_errors")
_LINK_COUNTERS = ("queued", "sent", "acked", "batches_sent", "batches_resent", "go_backs", "heartbeats", "reconnects",
                  "learner_changes", "heads_received", "internal_errors")


class TransportError(RuntimeError):
    """A transport failure the caller must see: no token, a full outbox, an item larger than a message, closed."""


class RejectedMessage(ValueError):
    """A received message failed a check; `reason` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# --- token -----------------------------------------------------------------------------------------------------------

def load_token(token: str | bytes | None = None, *, path: str | os.PathLike | None = None) -> bytes:
    """The shared secret: `token` if given, else the file at `path`, else $IREVLA_LEARNER_TOKEN, else the file named by
    $IREVLA_LEARNER_TOKEN_FILE. An empty or missing token is refused (TransportError)."""
    source = "the token argument"
    if token is None and path is None:
        if TOKEN_ENV in os.environ:
            token, source = os.environ[TOKEN_ENV], f"${TOKEN_ENV}"
        elif os.environ.get(TOKEN_FILE_ENV):
            path = os.environ[TOKEN_FILE_ENV]
    if token is None and path is not None:
        path = Path(path)
        try:
            token, source = path.read_bytes(), str(path)
        except OSError as error:
            raise TransportError(f"cannot read the learner token file {path}: {error}") from None
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("learner token file %s is readable by group/others; chmod 600 it", path)
    if token is None:
        raise TransportError(f"no learner token: pass one, or set ${TOKEN_ENV} or ${TOKEN_FILE_ENV} (make one with "
                             "python -c 'import secrets; print(secrets.token_hex(32))')")
    token = (token.encode() if isinstance(token, str) else bytes(token)).strip()
    if not token:
        raise TransportError(f"the learner token from {source} is empty; refusing to run unauthenticated")
    if len(token) < 16:
        log.warning("the learner token from %s is short (%d bytes); use >= 32 random hex characters", source,
                    len(token))
    return token


def check_bind_address(bind: str, allow_remote: bool = False) -> None:
    """Refuse to listen beyond this machine unless asked to: `bind` must be loopback (tcp://127.0.0.1, ::1,
    localhost), ipc:// or inproc://, or `allow_remote` must be True."""
    if bind.startswith(("ipc://", "inproc://")):
        return
    if not bind.startswith("tcp://"):
        raise ValueError(f"learner bind address {bind!r}: expected tcp://HOST:PORT, ipc:// or inproc://")
    host = bind[len("tcp://"):].rpartition(":")[0].strip("[]")
    if not host:
        raise ValueError(f"learner bind address {bind!r}: expected tcp://HOST:PORT")
    local = host in _LOCAL_HOSTS
    if not local:
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False  # "*", an interface name or a host name
    if not local and not allow_remote:
        raise ValueError(f"learner bind address {bind!r} is not loopback: anyone who can reach it can talk to the "
                         "learner (the token authenticates, it does not encrypt). Pass allow_remote=True to "
                         "listen on it deliberately, or keep 127.0.0.1 and use an SSH tunnel")


def _check_id(name: str, value) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise ValueError(f"{name}: expected 1..{MAX_ID_CHARS} printable characters, got {value!r:.80}")
    return value


# --- wire format -----------------------------------------------------------------------------------------------------

def mac_frames(token: bytes, frames: Sequence) -> bytes:
    """HMAC-SHA256 over the frames, each prefixed by its 8-byte length (so bytes cannot move between frames)."""
    mac = hmac.new(token, digestmod=hashlib.sha256)
    for frame in frames:
        view = memoryview(frame)
        mac.update(view.nbytes.to_bytes(8, "big"))
        mac.update(view)
    return mac.digest()


def encode_array(name: str, array) -> tuple[dict, bytes]:
    """(array spec for the header, raw little-endian C-contiguous bytes); ValueError for a dtype that cannot travel."""
    array = np.asarray(array)
    wire = WIRE_DTYPES.get(array.dtype.name)
    if wire is None:
        raise ValueError(f"array {name!r}: dtype {array.dtype} cannot travel; allowed: {sorted(WIRE_DTYPES)}")
    if array.ndim > MAX_NDIM:
        raise ValueError(f"array {name!r}: {array.ndim} dimensions, at most {MAX_NDIM}")
    return ({"name": name, "dtype": array.dtype.name, "shape": [int(n) for n in array.shape]},
            np.ascontiguousarray(array, dtype=wire).tobytes())


def encode_message(token: bytes, header: Mapping, arrays: Sequence[tuple[dict, bytes]] = ()) -> list[bytes]:
    """The frames of one message: JSON header (``v`` and ``arrays`` filled in), array frames, MAC."""
    header = dict(header, v=WIRE_VERSION, arrays=[spec for spec, _ in arrays])
    frames = [json.dumps(header, separators=(",", ":"), allow_nan=False).encode(), *(data for _, data in arrays)]
    frames.append(mac_frames(token, frames))
    return frames


def decode_message(token: bytes, frames: Sequence, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                   max_arrays: int = DEFAULT_MAX_ARRAYS) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays by name) of a received message, or RejectedMessage. The arrays are fresh native-order copies."""
    if len(frames) < 2:
        raise RejectedMessage("frames", f"{len(frames)} frame(s), need a header and a MAC")
    if len(frames) - 2 > max_arrays:
        raise RejectedMessage("frames", f"{len(frames) - 2} arrays, at most {max_arrays}")
    total = sum(memoryview(frame).nbytes for frame in frames)
    if total > max_message_bytes:
        raise RejectedMessage("size", f"{total} bytes, at most {max_message_bytes}")
    if memoryview(frames[-1]).nbytes != MAC_BYTES or not hmac.compare_digest(mac_frames(token, frames[:-1]),
                                                                             bytes(frames[-1])):
        raise RejectedMessage("auth", "bad MAC (wrong token, or altered in transit)")
    try:
        header = json.loads(bytes(frames[0]))
    except (ValueError, UnicodeDecodeError) as error:
        raise RejectedMessage("header", f"not UTF-8 JSON ({error})") from None
    if not isinstance(header, dict):
        raise RejectedMessage("header", f"expected a JSON object, got {type(header).__name__}")
    if header.get("v") != WIRE_VERSION:
        raise RejectedMessage("version", f"wire version {header.get('v')!r:.40}, this side speaks {WIRE_VERSION}")
    specs = header.get("arrays")
    if not isinstance(specs, list) or len(specs) != len(frames) - 2:
        count = len(specs) if isinstance(specs, list) else "no"
        raise RejectedMessage("frames", f"header lists {count} arrays, message has {len(frames) - 2} array frames")
    arrays: dict[str, np.ndarray] = {}
    for spec, data in zip(specs, frames[1:-1]):
        if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape"}:
            raise RejectedMessage("header", f"array spec {spec!r:.120}: expected keys name, dtype, shape")
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or name in arrays:
            raise RejectedMessage("header", f"array name {name!r:.80}: empty, too long or repeated")
        if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
            raise RejectedMessage("dtype", f"array {name!r}: dtype {dtype!r:.40} not in {sorted(WIRE_DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise RejectedMessage("shape", f"array {name!r}: shape {shape!r:.80} is not a list of <= {MAX_NDIM} "
                                  "non-negative ints")
        wire = WIRE_DTYPES[dtype]
        expected = math.prod(shape) * wire.itemsize
        size = memoryview(data).nbytes
        if size != expected:
            raise RejectedMessage("bytes", f"array {name!r}: {size} bytes, {dtype}{tuple(shape)} needs {expected}")
        if dtype == "bool" and size and np.frombuffer(data, np.uint8).max() > 1:
            raise RejectedMessage("bytes", f"array {name!r}: bool bytes other than 0/1")
        arrays[name] = np.frombuffer(data, wire).reshape(shape).astype(np.dtype(dtype))
    return header, arrays


def _item_to_wire(item: Transition | EpisodeEnd) -> tuple[dict, list[tuple[str, np.ndarray]], int]:
    """(scalar fields, named arrays, bytes) of an item, validated (ValueError names the field)."""
    item.validate()
    if isinstance(item, Transition):
        fields = {"type": "transition", "episode": int(item.episode), "step": int(item.step),
                  "intervention": bool(item.intervention), "policy_version": int(item.policy_version)}
        names = TRANSITION_ARRAYS
    else:
        fields = {"type": "episode_end", "episode": int(item.episode), "steps": int(item.steps),
                  "success": bool(item.success)}
        names = EPISODE_END_ARRAYS
    encoded = [encode_array(name, getattr(item, name)) for name in names]
    nbytes = sum(len(data) for _, data in encoded) + _HEADER_ITEM_BYTES + _HEADER_ARRAY_BYTES * len(encoded)
    return fields, encoded, nbytes


def _item_from_wire(index: int, fields, arrays: Mapping[str, np.ndarray]) -> Transition | EpisodeEnd:
    if not isinstance(fields, dict):
        raise ValueError(f"item {index}: expected a JSON object")
    kind = fields.get("type")
    if kind == "transition":
        scalars, names, cls = ("episode", "step", "intervention", "policy_version"), TRANSITION_ARRAYS, Transition
    elif kind == "episode_end":
        scalars, names, cls = ("episode", "steps", "success"), EPISODE_END_ARRAYS, EpisodeEnd
    else:
        raise ValueError(f"item {index}: unknown type {kind!r:.40}")
    if set(fields) != {"type", *scalars}:
        raise ValueError(f"item {index}: fields {sorted(fields)}, expected {sorted(['type', *scalars])}")
    missing = [name for name in names if f"{index}/{name}" not in arrays]
    if missing:
        raise ValueError(f"item {index}: missing arrays {missing}")
    item = cls(**{name: fields[name] for name in scalars}, **{name: arrays[f"{index}/{name}"] for name in names})
    item.validate()
    return item


def _reject_counter() -> dict[str, int]:
    return collections.defaultdict(int)


def _log_rejection(side: str, counts: dict[str, int], rejection: RejectedMessage, peer: str) -> None:
    counts[rejection.reason] += 1
    n = counts[rejection.reason]
    if n <= 10 or n & (n - 1) == 0:  # rate-limited: a flood of garbage must not flood the log
        log.warning("%s: rejected a message from %s (%s) [%d '%s' rejection(s) so far]", side, peer, rejection, n,
                    rejection.reason)


def _header_int(header: Mapping, key: str, minimum: int | None = 0) -> int:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise RejectedMessage("header", f"{key}: expected an int >= {minimum}, got {value!r:.40}")
    return value


def _header_id(header: Mapping, key: str) -> str:
    try:
        return _check_id(key, header.get(key))
    except ValueError as error:
        raise RejectedMessage("header", str(error)) from None


# --- learner side ----------------------------------------------------------------------------------------------------

@dataclass
class _Session:
    """One actor link instance as the learner sees it."""

    actor: str
    identity: bytes
    expected: int  # next batch seq accepted
    consumed: int  # highest seq the learner has taken and committed (acknowledged)
    have_head: int = -1
    head_sent: int = -1
    head_sent_at: float = 0.0
    last_seen: float = 0.0
    ack_due: bool = False
    pushed_back: bool = False  # a batch was refused for a full inbox: ask for it again once there is room


@dataclass
class _InboxBatch:
    session: str
    seq: int
    received: list[Received]
    nbytes: int


class LearnerServer:
    """The learner's end: receives transitions / episode ends from any number of actors, serves the latest head.

    ``poll(timeout_ms)`` returns what arrived since the last call (as `Received`: actor id + item, in each actor's
    order); calling it again (or `commit`) acknowledges what it returned before, so store items before polling again.
    ``publish_head(version, params)`` replaces the head actors are sent (latest only; versions must increase).
    Binding to a non-loopback address needs ``allow_remote=True``.
    """

    def __init__(self, bind: str = DEFAULT_ADDRESS, token: str | bytes | None = None, *, allow_remote: bool = False,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_arrays: int = DEFAULT_MAX_ARRAYS,
                 max_inbox_items: int = 100_000, max_inbox_bytes: int = 4 << 30, head_resend_s: float = 5.0,
                 actor_timeout_s: float = 60.0, max_sessions: int = 1024) -> None:
        self._token = load_token(token)
        check_bind_address(bind, allow_remote)
        self.max_message_bytes, self.max_arrays = int(max_message_bytes), int(max_arrays)
        self.max_inbox_items, self.max_inbox_bytes = int(max_inbox_items), int(max_inbox_bytes)
        self.head_resend_s, self.actor_timeout_s, self.max_sessions = head_resend_s, actor_timeout_s, max_sessions
        self.instance = secrets.token_hex(8)  # tells actors a restarted learner from the one they knew
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)  # per frame; the total is checked below
            self._socket.setsockopt(zmq.RCVHWM, 1000)
            self._socket.setsockopt(zmq.SNDHWM, 1000)
            if ":" in bind[len("tcp://"):].rpartition(":")[0]:
                self._socket.setsockopt(zmq.IPV6, 1)
            self._socket.bind(bind)
            self.address = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as error:
            self._socket.close(0)
            self._context.term()
            raise TransportError(f"learner cannot bind {bind}: {error}") from None
        self._lock = threading.Condition()
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._inbox: collections.deque[_InboxBatch] = collections.deque()
        self._inbox_items = self._inbox_bytes = 0
        self._returned: list[tuple[str, int]] = []
        self._head: tuple[int, list[bytes]] | None = None
        self._counts = collections.Counter(dict.fromkeys(_SERVER_COUNTERS, 0))
        self._rejected = _reject_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="learner-transport", daemon=True)
        self._thread.start()
        log.info("learner transport listening on %s (instance %s)", self.address, self.instance)

    # -- the learner's API --

    def poll(self, timeout_ms: float = 0, max_items: int | None = None) -> list[Received]:
        """Items received since the last call (waiting up to `timeout_ms` for the first); acknowledges the previous
        call's items. Whole batches: may return a few more than `max_items`."""
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        with self._lock:
            self._commit_locked()
            while not self._inbox and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            out: list[Received] = []
            while self._inbox and (max_items is None or len(out) < max_items):
                batch = self._inbox.popleft()
                self._inbox_items -= len(batch.received)
                self._inbox_bytes -= batch.nbytes
                self._returned.append((batch.session, batch.seq))
                out.extend(batch.received)
            return out

    def commit(self) -> None:
        """Acknowledge everything `poll` has returned so far (poll does this itself on its next call)."""
        with self._lock:
            self._commit_locked()

    def publish_head(self, version: int, params: Mapping[str, np.ndarray]) -> None:
        """Make (version, params) the head actors are sent; older versions are dropped, never queued."""
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
            raise ValueError(f"head version: expected an int >= 0, got {version!r}")
        if not params:
            raise ValueError("head parameters: empty")
        arrays = [encode_array(_check_id("head parameter name", name), value) for name, value in params.items()]
        frames = encode_message(self._token, {"kind": "head", "actor": "learner", "seq": 0, "instance": self.instance,
                                              "version": int(version)}, arrays)
        size = sum(len(frame) for frame in frames)
        if size > self.max_message_bytes or len(arrays) > self.max_arrays:
            raise ValueError(f"head version {version}: {size} bytes in {len(arrays)} arrays exceeds the message bound "
                             f"({self.max_message_bytes} bytes, {self.max_arrays} arrays)")
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
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join()
        self._context.term()

    def __enter__(self) -> LearnerServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals (the I/O thread owns the socket) --

    def _commit_locked(self) -> None:
        for session_id, seq in self._returned:
            session = self._sessions.get(session_id)
            if session is not None and seq > session.consumed:
                session.consumed, session.ack_due = seq, True
        self._returned.clear()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                try:
                    if poller.poll(_IO_POLL_MS):
                        for _ in range(1000):  # a bounded burst, then acks and heads get their turn
                            try:
                                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                            except zmq.Again:
                                break
                            self._handle(frames)
                    self._send_due()
                except Exception:  # a bug here must not take the learner down; say so loudly and keep serving
                    self._counts["internal_errors"] += 1
                    log.exception("learner transport: unexpected error while serving (continuing)")
                    time.sleep(0.05)
        finally:
            self._socket.close(0)

    def _handle(self, frames: list) -> None:
        self._counts["messages"] += 1
        peer = "unknown peer"
        try:
            peer = frames[-1].get("Peer-Address") or peer
        except (zmq.ZMQError, AttributeError):
            pass
        identity, frames = frames[0].bytes, [frame.buffer for frame in frames[1:]]
        try:
            header, arrays = decode_message(self._token, frames, max_message_bytes=self.max_message_bytes,
                                            max_arrays=self.max_arrays)
            self._dispatch(identity, header, arrays)
        except RejectedMessage as rejection:
            with self._lock:
                _log_rejection("learner transport", self._rejected, rejection, peer)

    def _dispatch(self, identity: bytes, header: dict, arrays: dict[str, np.ndarray]) -> None:
        kind = header.get("kind")
        if kind not in ("batch", "heartbeat"):
            raise RejectedMessage("kind", f"{kind!r:.40} is not an actor message")
        actor, session_id = _header_id(header, "actor"), _header_id(header, "session")
        floor, have_head = _header_int(header, "floor", 1), _header_int(header, "head", -1)
        seq = _header_int(header, "seq", 0)
        if kind == "heartbeat":
            if arrays or "items" in header:
                raise RejectedMessage("content", "a heartbeat carries no items")
            items = None
        else:
            items = header.get("items")
            if seq < 1 or not isinstance(items, list) or not items or len(items) > self.max_arrays:
                raise RejectedMessage("content", f"batch: seq {seq}, items must be a non-empty list")
            items = self._decode_items(actor, items, arrays)  # a rejected message leaves no trace in the state
        now = time.monotonic()
        with self._lock:
            session = self._session(session_id, actor, identity, now)
            session.expected = max(session.expected, floor)  # below floor: acknowledged by an earlier learner
            session.consumed = max(session.consumed, floor - 1)
            session.have_head = max(session.have_head, have_head)
            gap = False
            if kind == "heartbeat":
                self._counts["heartbeats"] += 1
            elif seq < session.expected:
                self._counts["duplicates"] += 1
            elif seq > session.expected:
                self._counts["out_of_order"] += 1  # go-back-N: the actor resends from the gap
                gap = True
            else:
                received, nbytes = items, sum(array.nbytes for array in arrays.values())
                if self._inbox and (self._inbox_items + len(received) > self.max_inbox_items
                                    or self._inbox_bytes + nbytes > self.max_inbox_bytes):
                    self._counts["backpressure"] += 1  # not accepted: the actor keeps it and resends later
                    session.pushed_back = True
                else:
                    self._inbox.append(_InboxBatch(session_id, seq, received, nbytes))
                    self._inbox_items += len(received)
                    self._inbox_bytes += nbytes
                    session.expected += 1
                    self._counts["batches"] += 1
                    for item in received:
                        self._counts["transitions" if isinstance(item.item, Transition) else "episode_ends"] += 1
                    self._lock.notify_all()
            ack = self._ack_frames(session_id, session, gap=gap)
        self._send(identity, ack)
        self._counts["acks_sent"] += 1

    def _decode_items(self, actor: str, items: list, arrays: dict[str, np.ndarray]) -> list[Received]:
        try:
            decoded = [_item_from_wire(index, fields, arrays) for index, fields in enumerate(items)]
        except (ValueError, TypeError) as error:
            raise RejectedMessage("content", str(error)) from None
        expected_arrays = sum(len(TRANSITION_ARRAYS if isinstance(item, Transition) else EPISODE_END_ARRAYS)
                              for item in decoded)
        if expected_arrays != len(arrays):
            raise RejectedMessage("content", f"{len(arrays)} arrays for items that use {expected_arrays}")
        return [Received(actor, item) for item in decoded]

    def _session(self, session_id: str, actor: str, identity: bytes, now: float) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session(actor, identity, expected=1, consumed=0)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            log.info("learner transport: actor %r connected (session %s)", actor, session_id[:8])
        elif session.actor != actor:
            raise RejectedMessage("header", f"session {session_id[:8]} belongs to actor {session.actor!r}")
        if session.identity != identity:  # the actor reconnected with a new socket: its head may not have arrived
            session.identity, session.head_sent = identity, -1
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def _ack_frames(self, session_id: str, session: _Session, *, gap: bool = False, retry: bool = False) -> list[bytes]:
        """``gap``: a batch came out of order; ``retry``: batches were refused for a full inbox, now there is room."""
        session.ack_due = False
        return encode_message(self._token, {"kind": "ack", "actor": "learner", "seq": 0, "instance": self.instance,
                                            "session": session_id, "acked": session.consumed,
                                            "received": session.expected - 1, "gap": gap, "retry": retry})

    def _send_due(self) -> None:
        """Acknowledgements the learner's polls made due, and heads actors do not have yet."""
        now = time.monotonic()
        outgoing = []
        with self._lock:
            for session_id, session in self._sessions.items():
                if now - session.last_seen > self.actor_timeout_s:
                    continue
                retry = session.pushed_back and self._inbox_items < self.max_inbox_items // 2 + 1
                if session.ack_due or retry:
                    session.pushed_back = session.pushed_back and not retry
                    outgoing.append((session.identity, self._ack_frames(session_id, session, retry=retry), "acks_sent"))
                if self._head is not None:
                    version, frames = self._head
                    if session.have_head < version and (session.head_sent < version
                                                        or now - session.head_sent_at > self.head_resend_s):
                        session.head_sent, session.head_sent_at = version, now
                        outgoing.append((session.identity, frames, "heads_sent"))
        for identity, frames, counter in outgoing:
            self._send(identity, frames)
            self._counts[counter] += 1

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self._socket.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._counts["send_dropped"] += 1  # the actor is not keeping up; it will ask again


# --- actor side ------------------------------------------------------------------------------------------------------

@dataclass
class _OutItem:
    fields: dict
    arrays: list[tuple[dict, bytes]]
    nbytes: int


@dataclass
class _OutBatch:
    seq: int
    frames: list[bytes]
    items: int
    nbytes: int
    sent_at: float | None = None


@dataclass
class _LinkState:
    """What the I/O thread knows about the learner it talks to."""

    instance: str | None = None
    received: int = 0  # highest seq the current learner instance has (not necessarily acknowledged)
    last_heard: float | None = None
    socket_since: float = 0.0
    recreate_after: float = 0.0
    last_heartbeat: float = -math.inf
    last_go_back: float = -math.inf
    counts: collections.Counter = field(default_factory=lambda: collections.Counter(dict.fromkeys(_LINK_COUNTERS, 0)))


class ZmqLearnerLink:
    """An actor's `LearnerLink` to a `LearnerServer` at `address` (e.g. ``tcp://127.0.0.1:5555``).

    `send_transition` / `send_episode_end` validate and copy the item into a bounded outbox and return at once; a
    background thread batches, numbers, sends and resends until the learner acknowledges. While the learner is down
    the actor keeps its last head and keeps buffering; the outbox holds up to `max_buffered` unacknowledged items and
    `max_buffered_bytes`, beyond which `send_*` raises `TransportError` naming the bound (it never blocks and never
    drops silently). `poll_head` returns the newest head once. A learner silent for `dead_after_s` counts as gone:
    the socket is recreated and reconnected with exponential backoff up to `max_backoff_s`.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | bytes | None = None, actor_id: str = "actor-0", *,
                 max_buffered: int = 10_000, max_buffered_bytes: int = 1 << 30,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_arrays: int = DEFAULT_MAX_ARRAYS,
                 max_batch_items: int = 64, max_in_flight: int = 32, heartbeat_s: float = 1.0,
                 ack_timeout_s: float = 5.0, dead_after_s: float = 5.0, max_backoff_s: float = 30.0) -> None:
        self._token = load_token(token)
        self.address, self.actor_id = address, _check_id("actor_id", actor_id)
        self.max_buffered, self.max_buffered_bytes = int(max_buffered), int(max_buffered_bytes)
        self.max_message_bytes, self.max_arrays = int(max_message_bytes), int(max_arrays)
        self.max_batch_items = max(1, min(int(max_batch_items), self.max_arrays // len(TRANSITION_ARRAYS)))
        self.max_in_flight = max(1, int(max_in_flight))
        self.heartbeat_s, self.ack_timeout_s = heartbeat_s, ack_timeout_s
        self.dead_after_s, self.max_backoff_s = dead_after_s, max(max_backoff_s, dead_after_s)
        self.session = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._outbox: collections.deque[_OutItem] = collections.deque()
        self._pending_items = self._pending_bytes = 0  # outbox + unacknowledged batches
        self._unacked: collections.deque[_OutBatch] = collections.deque()  # I/O thread only
        self._next_seq = 1
        self._head: tuple[int, dict[str, np.ndarray]] | None = None
        self._have_head = -1
        self._rejected = _reject_counter()
        self._state = _LinkState()
        self._closed = False
        self._highest_sent = 0
        self._context = zmq.Context()
        try:
            first_socket = self._open_socket()
        except zmq.ZMQError as error:
            self._context.term()
            raise TransportError(f"learner link {self.actor_id!r}: cannot connect to {address!r}: {error}") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(first_socket,), name=f"learner-link-{self.actor_id}",
                                        daemon=True)
        self._thread.start()

    # -- LearnerLink --

    def send_transition(self, transition: Transition) -> None:
        self._enqueue(transition)

    def send_episode_end(self, episode: int, steps: int, success: bool, final_latent: tuple[np.ndarray, np.ndarray],
                         final_proprio: np.ndarray) -> None:
        tokens, mask = final_latent
        self._enqueue(EpisodeEnd(episode, steps, success, tokens, mask, final_proprio))

    def poll_head(self) -> tuple[int, dict[str, np.ndarray]] | None:
        with self._lock:
            head, self._head = self._head, None
        return head

    # -- the rest of the actor's API --

    @property
    def connected(self) -> bool:
        """Whether the learner answered within `dead_after_s`."""
        last = self._state.last_heard
        return last is not None and time.monotonic() - last < self.dead_after_s

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until the learner has acknowledged everything sent; True if it has."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending_items == 0:
                    return True
            time.sleep(0.01)
        with self._lock:
            return self._pending_items == 0

    def stats(self) -> dict:
        with self._lock:
            return {**self._state.counts, "buffered": self._pending_items, "buffered_bytes": self._pending_bytes,
                    "rejected": sum(self._rejected.values()), "rejected_reasons": dict(self._rejected),
                    "connected": self.connected, "learner": self._state.instance, "session": self.session}

    def close(self, flush_timeout_s: float = 0.0) -> None:
        """Stop the I/O thread (after waiting up to `flush_timeout_s` for acknowledgements). What is still
        unacknowledged is lost with this process; `stats()["buffered"]` says how much."""
        if self._closed:
            return
        if flush_timeout_s > 0:
            self.flush(flush_timeout_s)
        self._closed = True
        self._stop.set()
        self._thread.join()
        self._context.term()
        if self._pending_items:
            log.warning("learner link %r closed with %d unacknowledged item(s)", self.actor_id, self._pending_items)

    def __enter__(self) -> ZmqLearnerLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the caller's side of the outbox --

    def _enqueue(self, item: Transition | EpisodeEnd) -> None:
        if self._closed:
            raise TransportError(f"learner link {self.actor_id!r} is closed")
        fields, arrays, nbytes = _item_to_wire(item)
        if nbytes + _HEADER_BASE_BYTES + MAC_BYTES > self.max_message_bytes:
            raise TransportError(f"one {fields['type']} is {nbytes} bytes, larger than a message may be "
                                 f"(max_message_bytes={self.max_message_bytes})")
        with self._lock:
            if self._pending_items >= self.max_buffered or self._pending_bytes + nbytes > self.max_buffered_bytes:
                quiet = ("never answered" if self._state.last_heard is None
                         else f"last answered {time.monotonic() - self._state.last_heard:.0f} s ago")
                raise TransportError(
                    f"learner link {self.actor_id!r}: outbox full: {self._pending_items} item(s), "
                    f"{self._pending_bytes} bytes not yet acknowledged (max_buffered={self.max_buffered}, "
                    f"max_buffered_bytes={self.max_buffered_bytes}); the learner at {self.address} {quiet}")
            self._outbox.append(_OutItem(fields, arrays, nbytes))
            self._pending_items += 1
            self._pending_bytes += nbytes
            self._state.counts["queued"] += 1

    # -- the I/O thread --

    def _run(self, socket) -> None:
        poller = self._poller(socket)
        try:
            while not self._stop.is_set():
                try:
                    if socket is None:
                        socket = self._open_socket()
                        poller = self._poller(socket)
                    self._receive(socket, poller)
                    self._build_batches()
                    now = time.monotonic()
                    self._send_batches(socket, now)
                    self._heartbeat(socket, now)
                    if self._learner_gone(now):
                        socket.close(0)
                        socket = poller = None
                except zmq.ContextTerminated:
                    break
                except Exception:  # keep acting and buffering whatever happens to the link
                    self._state.counts["internal_errors"] += 1
                    log.exception("learner link %r: unexpected error (continuing)", self.actor_id)
                    time.sleep(0.05)
        finally:
            if socket is not None:
                socket.close(0)

    def _open_socket(self):
        socket = self._context.socket(zmq.DEALER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.IMMEDIATE, 1)  # queue only to a live connection; unsent batches stay ours
            socket.setsockopt(zmq.SNDHWM, 1000)
            socket.setsockopt(zmq.RCVHWM, 1000)
            socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            socket.setsockopt(zmq.RECONNECT_IVL, 100)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
            if self.address.startswith("tcp://["):
                socket.setsockopt(zmq.IPV6, 1)
            socket.connect(self.address)
        except BaseException:
            socket.close(0)
            raise
        state = self._state
        state.socket_since = time.monotonic()
        state.recreate_after = state.recreate_after or self.dead_after_s
        state.last_heartbeat = -math.inf
        self._go_back(everything=True)  # whatever an old socket had queued is gone
        return socket

    @staticmethod
    def _poller(socket) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        return poller

    def _learner_gone(self, now: float) -> bool:
        """Recreate the socket when the learner has been silent too long (backoff doubles while it stays silent)."""
        state = self._state
        quiet_since = max(state.last_heard or -math.inf, state.socket_since)
        if now - quiet_since < state.recreate_after:
            return False
        state.recreate_after = min(state.recreate_after * 2, self.max_backoff_s)
        state.counts["reconnects"] += 1
        log.warning("learner link %r: no answer from %s for %.1f s; reconnecting (%d unacknowledged item(s) kept)",
                    self.actor_id, self.address, now - quiet_since, self._pending_items)
        return True

    def _receive(self, socket, poller) -> None:
        if not poller.poll(_IO_POLL_MS):
            return
        for _ in range(1000):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                header, arrays = decode_message(self._token, [frame.buffer for frame in frames],
                                                max_message_bytes=self.max_message_bytes, max_arrays=self.max_arrays)
                self._on_message(header, arrays)
            except RejectedMessage as rejection:
                with self._lock:
                    _log_rejection(f"learner link {self.actor_id!r}", self._rejected, rejection, self.address)

    def _on_message(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        kind, instance = header.get("kind"), _header_id(header, "instance")
        if kind == "ack":
            if _header_id(header, "session") != self.session:
                raise RejectedMessage("content", "an acknowledgement for another session")
            acked, received = _header_int(header, "acked"), _header_int(header, "received")
            self._learner_seen(instance, received)
            self._on_ack(acked, received, gap=bool(header.get("gap")), retry=bool(header.get("retry")))
        elif kind == "head":
            version = _header_int(header, "version")
            if not arrays:
                raise RejectedMessage("content", "a head without parameters")
            self._learner_seen(instance, None)
            if version > self._have_head:
                self._have_head = version
                with self._lock:
                    self._head = (version, arrays)
                    self._state.counts["heads_received"] += 1
        else:
            raise RejectedMessage("kind", f"{kind!r:.40} is not a learner message")

    def _learner_seen(self, instance: str, received: int | None) -> None:
        state = self._state
        if state.last_heard is None or not self.connected:
            log.info("learner link %r: connected to %s", self.actor_id, self.address)
        state.last_heard = time.monotonic()
        state.recreate_after = self.dead_after_s
        if instance != state.instance:
            if state.instance is not None:  # a restarted learner: it has only what it says it has
                state.counts["learner_changes"] += 1
                log.warning("learner link %r: the learner at %s restarted; resending %d unacknowledged item(s)",
                            self.actor_id, self.address, self._pending_items)
                state.received = received if received is not None else self._floor() - 1
                self._go_back(everything=False)
            state.instance = instance

    def _on_ack(self, acked: int, received: int, gap: bool = False, retry: bool = False) -> None:
        state = self._state
        state.received = max(state.received, received)
        done_items = done_bytes = 0
        while self._unacked and self._unacked[0].seq <= acked:
            batch = self._unacked.popleft()
            done_items += batch.items
            done_bytes += batch.nbytes
        if done_items:
            with self._lock:
                self._pending_items -= done_items
                self._pending_bytes -= done_bytes
                state.counts["acked"] += done_items
        # one burst of out-of-order batches brings one gap answer each: go back once for them all
        if retry or (gap and time.monotonic() - state.last_go_back > min(self.ack_timeout_s, 0.5)):
            self._go_back(everything=False)

    def _go_back(self, everything: bool) -> None:
        """Mark batches for resending: every unacknowledged one (new socket, new learner instance: what the learner
        holds is unknown) or those the learner has not confirmed receiving (timeout, gap)."""
        state = self._state
        if everything:
            state.received = self._floor() - 1
        targets = [batch for batch in self._unacked if batch.seq > state.received and batch.sent_at is not None]
        if not targets:
            return
        state.counts["go_backs"] += 1
        state.last_go_back = time.monotonic()
        state.counts["batches_resent"] += len(targets)
        for batch in targets:
            batch.sent_at = None

    def _floor(self) -> int:
        """The lowest seq not yet acknowledged: everything below it the learner side already has."""
        return self._unacked[0].seq if self._unacked else self._next_seq

    def _build_batches(self) -> None:
        in_flight = sum(1 for batch in self._unacked if batch.seq > self._state.received)
        budget = self.max_message_bytes - _HEADER_BASE_BYTES - MAC_BYTES
        while in_flight < self.max_in_flight:
            with self._lock:
                if not self._outbox:
                    return
                items, nbytes = [], 0
                while (self._outbox and len(items) < self.max_batch_items
                       and (not items or nbytes + self._outbox[0].nbytes <= budget)):
                    item = self._outbox.popleft()
                    items.append(item)
                    nbytes += item.nbytes
            seq = self._next_seq
            self._next_seq += 1
            arrays = [(dict(spec, name=f"{index}/{spec['name']}"), data)
                      for index, item in enumerate(items) for spec, data in item.arrays]
            header = {"kind": "batch", "actor": self.actor_id, "session": self.session, "seq": seq,
                      "floor": self._unacked[0].seq if self._unacked else seq, "head": self._have_head,
                      "items": [item.fields for item in items]}
            self._unacked.append(_OutBatch(seq, encode_message(self._token, header, arrays), len(items), nbytes))
            in_flight += 1

    def _send_batches(self, socket, now: float) -> None:
        state = self._state
        for batch in self._unacked:  # no answer in time to the oldest outstanding batch: resend from there
            if batch.seq > state.received and batch.sent_at is not None:
                if now - batch.sent_at > self.ack_timeout_s:
                    self._go_back(everything=False)
                break
        for batch in self._unacked:
            if batch.sent_at is not None:
                continue
            try:
                socket.send_multipart(batch.frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # no connection (IMMEDIATE) or the pipe is full: try again next round
            if batch.seq > self._highest_sent:  # first transmission
                self._highest_sent = batch.seq
                with self._lock:
                    state.counts["sent"] += batch.items
            batch.sent_at = now
            state.counts["batches_sent"] += 1

    def _heartbeat(self, socket, now: float) -> None:
        state = self._state
        if now - state.last_heartbeat < self.heartbeat_s:
            return
        frames = encode_message(self._token, {"kind": "heartbeat", "actor": self.actor_id, "session": self.session,
                                              "seq": 0, "floor": self._floor(), "head": self._have_head})
        try:
            socket.send_multipart(frames, zmq.NOBLOCK)
            state.counts["heartbeats"] += 1
        except zmq.Again:
            pass
        state.last_heartbeat = now

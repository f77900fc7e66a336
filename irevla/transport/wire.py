"""What both ends of the actor <-> learner link share: the wire format, its checks, authentication, the I/O loop.

A message is ZeroMQ multipart, no pickle: a UTF-8 JSON header ``{"v": 2, "kind", ..., "arrays": [{"name", "dtype",
"shape"}, ...]}``, one frame per array (raw little-endian bytes), and with a token a last frame HMAC-SHA256(token,
each frame's 8-byte length + bytes). Dtypes are whitelisted, each frame's length must be dtype size x shape, size
and array count are bounded; a failing message raises `RejectedMessage` and is counted by reason and dropped.

Authentication, one mechanism per link. **CURVE** (CurveZMQ: each connection encrypted, both ends proven by key
pairs, the learner admitting only the actor keys in its clients directory) is required whenever the learner binds
beyond loopback, and used on loopback too when keys are given; a peer without an admitted key fails the handshake
and not one of its bytes reaches us. Without keys, on loopback only, a shared **token** MACs every message both ways:
nothing crosses a wire there, `irevla iterate` makes one for its own learner in one line, and unlike ZeroMQ's PLAIN
it also proves the learner to the actor (a process squatting on the port cannot hand the robot a head).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import zmq
    import zmq.auth
    from zmq.utils.monitor import recv_monitor_message
except ImportError as error:  # pragma: no cover - exercised only without pyzmq
    raise ImportError("irevla.transport needs pyzmq: pip install 'irevla[learner]' (or [robot])") from error

from irevla.errors import UserError

log = logging.getLogger(__name__)

WIRE_VERSION, MAC_BYTES, MAX_NDIM, MAX_ID_CHARS = 2, 32, 8, 200
TOKEN_ENV, TOKEN_FILE_ENV = "IREVLA_LEARNER_TOKEN", "IREVLA_LEARNER_TOKEN_FILE"
DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_ARRAYS = "tcp://127.0.0.1:5555", 64 << 20, 1024
WIRE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in
               ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")}
# An episode message: each transition field stacked over the steps (one array each), then the end's arrays.
STEP_SCALARS, STEP_ARRAYS = ("step", "intervention", "policy_version"), ("latent_tokens", "latent_mask", "proprio",
                                                                          "action")
END_ARRAYS = ("final_tokens", "final_mask", "final_proprio")
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
KEYS_HINT = "make keys with: irevla learner keys --out DIR (docs/overnight.md, 'Actor/learner transport')"


class TransportError(UserError):
    """A failure the caller must see: no token or keys, an address off loopback, a full outbox, a closed link."""


class RejectedMessage(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def note_rejection(counts: Counter, side: str, rejection: RejectedMessage, peer: str) -> None:
    counts[rejection.reason] += 1
    n = counts[rejection.reason]
    if n <= 10 or n & (n - 1) == 0:  # rate-limited: a flood of garbage must not flood the log
        log.warning("%s: rejected a message from %s (%s) [%d so far]", side, peer, rejection, n)


# --- authentication --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Auth:
    """A ``token``, or a CURVE key pair plus, on an actor, the learner's public key (``server_key``), on the learner
    the directory of admitted actor public keys (``clients``)."""

    token: bytes | None = None
    public: bytes | None = None
    secret: bytes | None = None
    server_key: bytes | None = None
    clients: str | None = None


def load_token(token: str | bytes | None = None) -> bytes:
    """`token` if given, else $IREVLA_LEARNER_TOKEN, else the file named by $IREVLA_LEARNER_TOKEN_FILE."""
    if token is None and TOKEN_ENV in os.environ:
        token = os.environ[TOKEN_ENV]
    elif token is None and os.environ.get(TOKEN_FILE_ENV):
        try:
            token = Path(os.environ[TOKEN_FILE_ENV]).read_bytes()
        except OSError as error:
            raise TransportError(f"cannot read the learner token file (${TOKEN_FILE_ENV}): {error}") from None
    if token is None:
        raise TransportError(f"no learner token: set ${TOKEN_ENV} or ${TOKEN_FILE_ENV} (make one with python -c "
                             "'import secrets; print(secrets.token_hex(32))'), or use CURVE keys")
    if not (token := (token.encode() if isinstance(token, str) else bytes(token)).strip()):
        raise TransportError("the learner token is empty; refusing to run unauthenticated")
    return token


def load_key(path, option: str, secret: bool = False) -> tuple[bytes, bytes | None]:
    """(public, secret) key of a file `irevla learner keys` wrote; `option` names it in errors."""
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise TransportError(f"{option} {path}: not a readable key file ({error}); {KEYS_HINT}") from None
    if secret and secret_key is None:
        raise TransportError(f"{option} {path}: holds no secret key; give the .key_secret file")
    if secret and os.stat(path).st_mode & 0o077:
        log.warning("%s %s is readable by group/others; chmod 600 it", option, path)
    return public, secret_key


def learner_auth(bind: str, token=None, *, curve_secret=None, curve_clients=None) -> Auth:
    """The learner's `Auth`: CURVE with both key options, else a token (refused off loopback)."""
    if not (curve_secret or curve_clients):
        check_address(bind, None, "learner")
        return Auth(token=load_token(token))
    if not (curve_secret and curve_clients):
        raise TransportError(f"--curve-secret and --curve-clients go together; {KEYS_HINT}")
    public, secret = load_key(curve_secret, "--curve-secret", secret=True)
    if not (Path(curve_clients).is_dir() and zmq.auth.load_certificates(curve_clients)):
        raise TransportError(f"--curve-clients {curve_clients}: expected a directory of actor public keys (*.key)")
    return Auth(public=public, secret=secret, clients=str(curve_clients))


def actor_auth(address: str, token=None, *, curve_server_key=None, curve_secret=None) -> Auth:
    """An actor's `Auth`: CURVE with the learner's public key and its own secret, else a token (loopback only)."""
    if not (curve_server_key or curve_secret):
        check_address(address, None, "actor")
        return Auth(token=load_token(token))
    if not (curve_server_key and curve_secret):
        raise TransportError(f"curve_server_key and curve_secret go together; {KEYS_HINT}")
    public, secret = load_key(curve_secret, "curve_secret", secret=True)
    return Auth(public=public, secret=secret, server_key=load_key(curve_server_key, "curve_server_key")[0])


def check_address(address: str, auth: Auth | None, side: str) -> None:
    """Refuse a tcp:// address beyond this machine without CURVE: a token authenticates but does not encrypt."""
    what, hint = {"learner": ("learner binds", "give --curve-secret and --curve-clients"),
                  "actor": ("actor connects to", "give curve_server_key and curve_secret")}[side]
    if (auth is not None and auth.token is None) or address.startswith(("ipc://", "inproc://")):
        return
    host = address.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    if not address.startswith("tcp://") or not host:
        raise TransportError(f"{what} {address!r}: expected tcp://HOST:PORT, ipc:// or inproc://")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface or a host name
        loopback = False
    if not loopback:
        raise TransportError(f"{what} {address}, not loopback: {hint} (CURVE encrypts; {KEYS_HINT}), or keep "
                             "127.0.0.1 and use an SSH tunnel")


def write_keys(out, actors: Sequence[str] = ("actor",)) -> None:
    """``learner.key`` + ``learner.key_secret``, per actor ``<actor>.key_secret`` + ``clients/<actor>.key`` (what the
    learner admits). Secret files are 0600; existing keys are never replaced."""
    out = Path(out)
    if bad := [name for name in actors if not re.fullmatch(r"\w[\w.-]{0,63}", name, re.ASCII) or name == "learner"]:
        raise TransportError(f"--actor {bad[0]!r}: expected letters, digits, '_', '.', '-' (not 'learner')")
    targets = {name: (out / "clients" / f"{name}.key", out / f"{name}.key_secret") for name in actors}
    targets["learner"] = (out / "learner.key", out / "learner.key_secret")
    if existing := [path for pair in targets.values() for path in pair if path.exists()]:
        raise TransportError(f"{existing[0]}: already there; irevla learner keys never replaces keys (move them)")
    (out / "clients").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as private:  # 0700: no secret is readable before its chmod
        for name, (public, secret) in targets.items():
            made_public, made_secret = zmq.auth.create_certificates(private, name)
            os.chmod(made_secret, 0o600)
            os.replace(made_public, public)
            os.replace(made_secret, secret)


# --- sockets ---------------------------------------------------------------------------------------------------------

def open_socket(context: zmq.Context, kind: int, address: str, auth: Auth, max_message_bytes: int,
                heartbeat_s: float = 1.0, dead_after_s: float = 10.0) -> tuple[zmq.Socket, zmq.Socket]:
    """A socket and its monitor, with bounds, ZeroMQ's own heartbeats (a peer silent for `dead_after_s` is
    disconnected; a connecting side then reconnects by itself) and the CURVE keys; not yet bound or connected."""
    socket = context.socket(kind)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # per frame; the total is checked in decode
    socket.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat_s * 1000))
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(dead_after_s * 1000))
    socket.setsockopt(zmq.HEARTBEAT_TTL, int(dead_after_s * 1000))
    socket.setsockopt(zmq.IPV6, int("[" in address))
    if auth.token is None:
        socket.curve_publickey, socket.curve_secretkey = auth.public, auth.secret
        if auth.clients is not None:
            socket.curve_server = True
        else:
            socket.curve_serverkey = auth.server_key
    return socket, socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                                             | HANDSHAKE_FAILED)


def io_loop(name: str, stop, counts: Counter, socket: zmq.Socket, monitor: zmq.Socket,
            on_event: Callable[[int], None], on_frames: Callable[[list], None], after: Callable[[], None]) -> None:
    """One side's I/O thread: monitor events, then a bounded burst of messages, then `after` (its sends)."""
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while not stop.is_set():
        try:
            ready = dict(poller.poll(10))
            while monitor in ready and monitor.poll(0):
                on_event(recv_monitor_message(monitor)["event"])
            for _ in range(1000 if socket in ready else 0):
                try:
                    on_frames(socket.recv_multipart(zmq.NOBLOCK, copy=False))
                except zmq.Again:
                    break
            after()
        except Exception:  # a bug here must not stop the learner or the actor: say so loudly and go on
            counts["internal_errors"] += 1
            log.exception("%s: unexpected error in the I/O thread (continuing)", name)
            time.sleep(0.05)


# --- wire format -----------------------------------------------------------------------------------------------------

def mac_frames(token: bytes, frames: Sequence) -> bytes:
    """HMAC-SHA256 over the frames, each prefixed by its 8-byte length (so bytes cannot move between frames)."""
    mac = hmac.new(token, digestmod=hashlib.sha256)
    for frame in frames:
        mac.update(memoryview(frame).nbytes.to_bytes(8, "big"))
        mac.update(frame)
    return mac.digest()


def header_field(header: Mapping, key: str, kind: type = int, minimum: int = 0):
    """`header[key]` if it is a `kind` (an int >= `minimum`; a str: an id), else RejectedMessage."""
    value = header.get(key)
    if type(value) is not kind or (kind is int and value < minimum) or (kind is str and not (
            0 < len(value) <= MAX_ID_CHARS and value.isprintable())):
        raise RejectedMessage("header", f"{key}: expected a {kind.__name__}, got {value!r:.40}")
    return value


def encode_array(name: str, array) -> tuple[dict, bytes]:
    array = np.asarray(array)
    if array.dtype.name not in WIRE_DTYPES or array.ndim > MAX_NDIM:
        raise ValueError(f"array {name!r}: {array.dtype} {array.ndim}-D cannot travel ({sorted(WIRE_DTYPES)})")
    return ({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)},
            np.ascontiguousarray(array, dtype=WIRE_DTYPES[array.dtype.name]).tobytes())


@dataclass(frozen=True)
class Codec:
    """Encodes and checks messages: MAC'd with `token`, or bare under CURVE (token None), within the bounds."""

    token: bytes | None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_arrays: int = DEFAULT_MAX_ARRAYS

    def encode(self, header: Mapping, arrays: Sequence[tuple[dict, bytes]] = ()) -> list[bytes]:
        header = dict(header, v=WIRE_VERSION, arrays=[spec for spec, _ in arrays])
        frames = [json.dumps(header, separators=(",", ":"), allow_nan=False).encode(), *(data for _, data in arrays)]
        return frames + [mac_frames(self.token, frames)] if self.token is not None else frames

    def decode(self, frames: Sequence) -> tuple[dict, dict[str, np.ndarray]]:
        """(header, arrays by name: fresh native-order copies), or RejectedMessage."""
        macs = int(self.token is not None)
        if not 1 + macs <= len(frames) <= 1 + macs + self.max_arrays:
            raise RejectedMessage("frames", f"{len(frames)} frames: a header, <= {self.max_arrays} arrays"
                                  f"{', a MAC' * macs}")
        if (total := sum(memoryview(frame).nbytes for frame in frames)) > self.max_message_bytes:
            raise RejectedMessage("size", f"{total} bytes, at most {self.max_message_bytes}")
        if macs and not (memoryview(frames[-1]).nbytes == MAC_BYTES and hmac.compare_digest(
                mac_frames(self.token, frames[:-1]), bytes(frames[-1]))):
            raise RejectedMessage("auth", "bad MAC (wrong token, or altered in transit)")
        try:
            header = json.loads(bytes(frames[0]))
        except (ValueError, UnicodeDecodeError) as error:
            raise RejectedMessage("header", f"not UTF-8 JSON ({error})") from None
        if not isinstance(header, dict) or header.get("v") != WIRE_VERSION:
            raise RejectedMessage("version", f"expected a JSON object with v={WIRE_VERSION}, got {header!r:.60}")
        specs, data = header.get("arrays"), frames[1:len(frames) - macs]
        if not isinstance(specs, list) or len(specs) != len(data):
            raise RejectedMessage("frames", f"header lists {specs!r:.60} for {len(data)} array frame(s)")
        arrays: dict[str, np.ndarray] = {}
        for spec, buffer in zip(specs, data):
            if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape"}:
                raise RejectedMessage("header", f"array spec {spec!r:.120}: expected keys name, dtype, shape")
            name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
            if not isinstance(name, str) or not 0 < len(name) <= MAX_ID_CHARS or name in arrays:
                raise RejectedMessage("header", f"array name {name!r:.80}: empty, too long or repeated")
            if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
                raise RejectedMessage("dtype", f"array {name!r}: dtype {dtype!r:.40} not in {sorted(WIRE_DTYPES)}")
            if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(type(n) is int and n >= 0
                                                                               for n in shape)):
                raise RejectedMessage("shape", f"array {name!r}: shape {shape!r:.80}, expected <= {MAX_NDIM} ints")
            if (size := memoryview(buffer).nbytes) != math.prod(shape) * WIRE_DTYPES[dtype].itemsize:
                raise RejectedMessage("bytes", f"array {name!r}: {size} bytes do not make {dtype}{tuple(shape)}")
            if dtype == "bool" and size and np.frombuffer(buffer, np.uint8).max() > 1:
                raise RejectedMessage("bytes", f"array {name!r}: bool bytes other than 0/1")
            arrays[name] = np.frombuffer(buffer, WIRE_DTYPES[dtype]).reshape(shape).astype(dtype)
        return header, arrays

"""A learner process for test_transport.py: serves on --address, publishes one head, records every item it receives.

Each received item becomes one JSON line in --record, written and flushed before the next poll (which is what
acknowledges its episode), so after a SIGKILL the file holds at least everything the actor saw acknowledged.
The token comes from $IREVLA_LEARNER_TOKEN.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np

from irevla.transport.messages import EpisodeEnd, Received, Transition


def head_params(version: int) -> dict[str, np.ndarray]:
    return {"w": np.arange(7, dtype=np.float32) * version, "b": np.full((2, 3), version, np.float16)}


def digest(item: Transition | EpisodeEnd) -> str:
    """Scalars and arrays (dtype, shape, bytes) of an item, hashed: equal digests mean identical items."""
    h = hashlib.sha256()
    for name, value in sorted(vars(item).items()):
        h.update(name.encode())
        if isinstance(value, np.ndarray):
            h.update(f"{value.dtype.str}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def describe(received: Received) -> dict:
    item = received.item
    return {"actor": received.actor, "type": type(item).__name__, "episode": item.episode,
            "step": getattr(item, "step", None), "digest": digest(item)}


def main() -> None:
    from irevla.transport.learner_side import LearnerServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--head-version", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--hang-after", type=int, default=0,
                        help="once this many items are recorded, stop polling: what the last poll returned is stored "
                             "but never acknowledged (a learner that dies before its next poll)")
    args = parser.parse_args()
    server = LearnerServer(args.address)
    server.publish_head(args.head_version, head_params(args.head_version))
    print("READY", server.address, flush=True)
    recorded = 0
    with open(args.record, "a") as out:
        while True:
            if args.hang_after and recorded >= args.hang_after:
                time.sleep(0.05)
                continue
            for received in server.poll(timeout_ms=50):
                out.write(json.dumps(describe(received)) + "\n")
                recorded += 1
            out.flush()


if __name__ == "__main__":
    main()

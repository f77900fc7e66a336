"""Benchmark of the stage-1 learner: SAC updates/s on cached latents, and what re-encoding images would cost instead.

    python bench/bench_learner.py [--quick | --profile] [--device auto|cpu|gpu] [--threads 1] [--repeats 5]
                                  [--out bench/results/learner.json]

The head is config/sft.yaml's tiny VLA (random-weight Qwen2-VL, 64 px, one camera: latents 50 x 128, token_dim 128,
MLP [256, 256], proprio 4, action 4), in both latent modes (`HeadSpec.latent`), and with token latents in both critic
layouts (`SACConfig.critic_token_learner`: one token learner shared by the 10 critics, or one per critic):

* ``updates_per_s``: `SACTrainer.step()` -- sample a 50/50 demo/online batch from two `LatentReplay` buffers (random
  latents) and run one jitted SAC/REDQ update (``utd`` critic steps + one actor step), batch 256, 10 critics, at
  utd 4 (the default) and utd 1; ``transitions_per_s`` = updates/s x utd x 256 (critic-step samples);
  ``vs_pooled`` = the update's time over the pooled update's at the same utd, in the same run;
* ``encode_s``: the time the frozen VLM (torch, `VLAPolicy.encode`, no grad) needs for the images of one update's
  batch -- observation and next observation of utd x 256 transitions -- which is what an RL step on images instead
  of cached latents would add; ``reencode_ratio`` = (update + encode) / update, the slowdown avoided by caching;
* ``ensembles``: config/demo.yaml's learner (pooled latents, utd 2, batch 128) with REDQ's 10 critics at the head's
  width against the demo's 4 critics 128 wide, and the speed-up between them (same run); then the demo's learner on
  token latents (what `rl.latent: tokens` costs with the demo's settings);
* ``profile`` (alone with ``--profile``): where a token-latent step goes -- numpy sampling, host -> device transfer,
  the jitted update, and inside it the token learners (the update's time minus the same update on a pooled head
  with the same MLPs), set beside a prediction from one token learner's measured forward and forward + backward
  time x the passes an update makes (`token_learner_passes`), and how many times the update compiled.

Medians over `repeats` timed calls after a warm-up (the first call compiles), because other load on a small machine
makes single calls noisy. JAX and torch run with `--threads` threads (default 1: on a busy 2-core machine one thread
is fastest). `--device` picks JAX's platform (auto: a GPU when jax has one) and the report records
``jax.devices()``; the VLM's encode always runs on torch's CPU here. `--quick` is a smoke test (utd 1, pooled and
shared-token latents, one repeat, no ensembles or profile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

INSTRUCTION = "press the button"
BATCH = 256
CRITICS = 10
LAYOUTS = ("shared", "per_critic")  # SACConfig.critic_token_learner, compared with token latents


def configure(device: str, threads: int) -> None:
    """JAX's platform and thread count must be set before jax is imported."""
    flags = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
             f"intra_op_parallelism_threads={threads}")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    if device != "auto":
        os.environ["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda"}[device]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(function, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_vla():
    """config/sft.yaml's policy (random weights, no download) for Meta-World's corner2 camera."""
    import numpy as np
    import yaml

    from irevla.config import validate_config
    from irevla.data.stats import stats_from_arrays
    from irevla.policy.config import PolicyConfig
    from irevla.policy.vla import VLAPolicy
    from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec

    settings = yaml.safe_load((ROOT / "config" / "sft.yaml").read_text())["policy"]
    config = validate_config(settings, PolicyConfig, "config/sft.yaml: policy")
    size = config.backbone.image_size
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (50, 4))], [rng.normal(size=(51, 4))],
                              ActionSpec.metaworld().names, METAWORLD_PROPRIO)
    policy = VLAPolicy.build(config, ActionSpec.metaworld(), ObservationSpec({"corner2": (size, size)},
                                                                             METAWORLD_PROPRIO), stats)
    policy.eval()
    return policy


def filled_buffers(spec, rng, transitions: int):
    """Demo and online `LatentReplay`s holding `transitions` random transitions each (20-step episodes). The latents
    cycle through 8 random episode blocks: what is stored does not change the timing, and drawing fresh normals for
    real-size token latents (PaliGemma's 288 x 2304) would take minutes."""
    import numpy as np

    from irevla.learner.replay import LatentReplay

    steps = 20
    blocks = [rng.normal(size=(steps + 1, *spec.latent_shape)).astype(np.float16) for _ in range(8)]
    buffers = []
    for _ in range(2):
        replay = LatentReplay(transitions + transitions // 20 + 1, spec.latent_shape, spec.proprio_dim,
                              spec.action_dim, with_mask=spec.latent == "tokens")
        for episode in range(transitions // steps):
            masks = np.ones((steps + 1, spec.latent_length), bool) if spec.latent == "tokens" else None
            replay.add_episode(blocks[episode % len(blocks)], masks,
                               rng.normal(size=(steps + 1, spec.proprio_dim)).astype(np.float32),
                               rng.uniform(-1, 1, (steps, spec.action_dim)).astype(np.float32),
                               success=bool(rng.integers(2)))
        buffers.append(replay)
    return buffers


def sac_trainer(spec, config, transitions: int = 4000):
    """(agent, `SACTrainer`) for `config`, on two buffers of `transitions` random transitions each."""
    import numpy as np

    from irevla.learner.sac import SACAgent, SACTrainer

    agent = SACAgent(spec, config)
    rng = np.random.default_rng(0)
    demo, online = filled_buffers(spec, rng, transitions)
    return agent, SACTrainer(agent, agent.init(None), demo, online, rng)


def bench_updates(spec, utd: int, repeats: int, critics: int = CRITICS, batch: int = BATCH,
                  critic_hidden: tuple[int, ...] | None = None, layout: str = "shared",
                  transitions: int = 4000) -> dict:
    from irevla.learner.sac import SACConfig

    _, trainer = sac_trainer(spec, SACConfig(num_critics=critics, batch_size=batch, utd=utd,
                                             critic_hidden=critic_hidden, critic_token_learner=layout), transitions)
    start = time.perf_counter()
    trainer.step()  # compiles
    compile_s = time.perf_counter() - start
    seconds = timed(trainer.step, repeats, warmup=1)  # step() returns floats: the update has finished
    return {"latent": spec.latent, "critic_token_learner": layout if spec.latent == "tokens" else "-",
            "latent_shape": list(spec.latent_shape), "utd": utd, "batch": batch,
            "critics": critics, "critic_hidden": list(critic_hidden or spec.hidden), "update_s": seconds,
            "updates_per_s": 1 / seconds, "transitions_per_s": utd * batch / seconds, "compile_s": compile_s}


# config/demo.yaml's stage-1 learner before and after it moved to a smaller ensemble (pooled latents, utd 2, batch
# 128): the ratio is what the demo's learner gained in updates per CPU second.
ENSEMBLES = ({"critics": 10, "critic_hidden": None}, {"critics": 4, "critic_hidden": (128, 128)})


def bench_ensembles(spec, tokens_spec, repeats: int) -> list[dict]:
    """Both ensembles on pooled latents, then the demo's ensemble on token latents (shared critic token learner)."""
    rows = [bench_updates(spec, 2, repeats, batch=128, **ensemble) for ensemble in ENSEMBLES]
    rows.append(bench_updates(tokens_spec, 2, repeats, batch=128, **ENSEMBLES[-1]))
    for row in rows:
        row["speedup_vs_first"] = rows[0]["update_s"] / row["update_s"]
    return rows


def bench_encode(policy, images: int, repeats: int, chunk: int = 256) -> float:
    """Seconds for the frozen VLM to encode `images` observations (in chunks of `chunk`)."""
    import torch

    size = policy.config.backbone.image_size
    frames = {"corner2": torch.randint(0, 256, (chunk, size, size, 3), dtype=torch.uint8)}

    def encode_all():
        with torch.no_grad():
            done = 0
            while done < images:
                count = min(chunk, images - done)
                policy.encode({k: v[:count] for k, v in frames.items()}, [INSTRUCTION] * count)
                done += count

    return timed(encode_all, repeats, warmup=1)


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


def bench_token_learner(spec, batch: int, repeats: int) -> dict:
    """Seconds for one token learner (the head's) on `batch` token latents: forward, and forward + backward."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from irevla.learner.flax_head import TokenLearner

    module = TokenLearner(spec.token_dim, spec.pool_queries, spec.attention_heads)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.normal(size=(batch, *spec.latent_shape)).astype(np.float16))
    mask = jnp.ones((batch, spec.latent_length), bool)
    params = module.init(jax.random.PRNGKey(0), tokens[:1].astype(jnp.float32), mask[:1])["params"]
    forward = jax.jit(lambda p, t, m: module.apply({"params": p}, t.astype(jnp.float32), m))
    backward = jax.jit(jax.grad(lambda p, t, m: module.apply({"params": p}, t.astype(jnp.float32), m).sum()))
    return {"forward_s": timed(lambda: _block(forward(params, tokens, mask)), repeats),
            "forward_backward_s": timed(lambda: _block(backward(params, tokens, mask)), repeats)}


def token_learner_passes(critics: int, utd: int, shared: bool) -> tuple[int, int]:
    """(forward-only, forward + backward) token-learner passes over one minibatch in one SAC update.

    Each critic step: the actor's token learner on the next observations (forward), the target critics' on the
    next observations (forward), the critics' on the observations (forward + backward). The actor step: the actor's
    (forward + backward) and the critics' (forward: Q's gradient reaches only the action). Shared: one critic token
    learner instead of one per critic."""
    per_critic = 1 if shared else critics
    return utd * (1 + per_critic) + per_critic, utd * per_critic + 1


def profile_update(spec, utd: int, repeats: int, layout: str = "shared") -> dict:
    """Where one `SACTrainer.step()` on token latents goes: numpy sampling, host -> device transfer, the jitted
    update (of which: token learners, predicted from their measured pass time x the passes an update makes), and how
    many times the update compiled."""
    from irevla.learner.flax_head import HeadSpec
    from irevla.learner.sac import BATCH_KEYS as keys
    from irevla.learner.sac import SACConfig, _batch_arrays

    config = SACConfig(num_critics=CRITICS, batch_size=BATCH, utd=utd, critic_token_learner=layout)
    agent, trainer = sac_trainer(spec, config)
    batches, demo_count = trainer.sample()
    arrays = _block(_batch_arrays(batches, keys))
    state = _block(agent._jitted_update(trainer.state, arrays, demo_count)[0])  # compiles
    sample_s = timed(trainer.sample, repeats)
    transfer_s = timed(lambda: _block(_batch_arrays(batches, keys)), repeats)
    update_s = timed(lambda: _block(agent._jitted_update(state, arrays, demo_count)), repeats)
    step_s = timed(trainer.step, repeats)
    compiles = agent._jitted_update._cache_size()
    # The same update without token learners: a pooled head of the same MLPs (its input is the token learner's
    # output size), so the difference is what the token learners cost inside the update.
    pooled_agent, pooled_trainer = sac_trainer(HeadSpec(**{**spec.__dict__, "latent": "pooled"}), config)
    pooled_batches, pooled_demo = pooled_trainer.sample()
    pooled_arrays = _block(_batch_arrays(pooled_batches, keys))
    pooled_state = _block(pooled_agent._jitted_update(pooled_trainer.state, pooled_arrays, pooled_demo)[0])
    mlp_update_s = timed(lambda: _block(pooled_agent._jitted_update(pooled_state, pooled_arrays, pooled_demo)),
                         repeats)
    passes = token_learner_passes(CRITICS, utd, layout == "shared")
    tl = bench_token_learner(spec, BATCH, repeats)
    predicted_tl_s = passes[0] * tl["forward_s"] + passes[1] * tl["forward_backward_s"]
    return {"latent": spec.latent, "utd": utd, "critic_token_learner": layout, "step_s": step_s, "sample_s": sample_s, "transfer_s": transfer_s,
            "update_s": update_s, "mlp_update_s": mlp_update_s, "token_learner_s": update_s - mlp_update_s,
            "token_learner_forward_s": tl["forward_s"], "token_learner_forward_backward_s": tl["forward_backward_s"],
            "token_learner_passes": {"forward": passes[0], "forward_backward": passes[1]},
            "predicted_token_learner_s": predicted_tl_s, "compiles": compiles}


def print_profile(rows: list[dict]) -> None:
    print("\nwhere a token-latent step goes (s; shares of the step):")
    for row in rows:
        step = row["step_s"]
        print(f"  utd {row['utd']} {row['critic_token_learner']:>10}: step {step:.3g} = sample {row['sample_s']:.3g}"
              f" ({row['sample_s'] / step:.0%}) + transfer {row['transfer_s']:.3g} ({row['transfer_s'] / step:.0%})"
              f" + update {row['update_s']:.3g} ({row['update_s'] / step:.0%}); in the update: token learners "
              f"{row['token_learner_s']:.3g} ({row['token_learner_s'] / step:.0%}; predicted "
              f"{row['predicted_token_learner_s']:.3g} from {row['token_learner_passes']}), MLPs and the rest "
              f"{row['mlp_update_s']:.3g}; compiled {row['compiles']}x")


def print_table(updates: list[dict], reencode: list[dict]) -> None:
    columns = ("latent", "critic_token_learner", "utd", "update_s", "updates_per_s", "vs_pooled", "compile_s")
    print("  ".join(f"{c:>20s}" for c in columns))
    for row in updates:
        print("  ".join(f"{row[c]:>20.4g}" if isinstance(row[c], float) else f"{row[c]:>20}" for c in columns))
    print()
    columns = ("latent", "critic_token_learner", "utd", "images", "update_s", "encode_s", "reencode_ratio")
    print("  ".join(f"{c:>20s}" for c in columns))
    for row in reencode:
        print("  ".join(f"{row[c]:>20.4g}" if isinstance(row[c], float) else f"{row[c]:>20}" for c in columns))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: utd 1, one repeat, no profile")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"),
                        help="JAX platform (auto: GPU when jax has one); the report records jax.devices()")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="only the breakdown of a token-latent step (sampling, transfer, token learners, the rest)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "learner.json"))
    args = parser.parse_args(argv)
    configure(args.device, args.threads)

    import jax
    import torch

    from irevla.learner.flax_head import HeadSpec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = [str(d) for d in jax.devices()]
    print(f"jax devices: {devices}")
    repeats = 1 if args.quick else args.repeats
    # (latent, critic token learner layout): the layout only exists with token latents
    heads = (("pooled", "shared"), ("tokens", "shared")) if args.quick else \
        (("pooled", "shared"), *(("tokens", layout) for layout in LAYOUTS))
    utds = (1,) if args.quick else (4, 1)

    policy = tiny_vla()
    if args.profile:
        spec = HeadSpec.from_policy(policy, latent="tokens")
        rows = [profile_update(spec, utd, repeats, layout) for layout in LAYOUTS for utd in utds]
        print_profile(rows)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "learner-profile", "profile": rows}, indent=2))
        return {"profile": rows}
    updates, reencode = [], []
    for latent, layout in heads:
        spec = HeadSpec.from_policy(policy, latent=latent)
        for utd in utds:
            row = bench_updates(spec, utd, repeats, layout=layout)
            updates.append(row)
            print(f"{latent} {row['critic_token_learner']} utd {utd}: {row['updates_per_s']:.3g} updates/s",
                  flush=True)
    pooled_s = {row["utd"]: row["update_s"] for row in updates if row["latent"] == "pooled"}
    for row in updates:  # the same run's pooled update at the same utd is the reference
        row["vs_pooled"] = row["update_s"] / pooled_s[row["utd"]]
    encode_s = {utd: bench_encode(policy, 2 * utd * BATCH, max(1, repeats // 2)) for utd in utds}
    for row in updates:
        seconds = encode_s[row["utd"]]
        reencode.append({"latent": row["latent"], "critic_token_learner": row["critic_token_learner"],
                         "utd": row["utd"], "images": 2 * row["utd"] * BATCH,
                         "update_s": row["update_s"], "encode_s": seconds,
                         "reencode_ratio": (row["update_s"] + seconds) / row["update_s"]})
    tokens = HeadSpec.from_policy(policy, latent="tokens")
    ensembles = [] if args.quick else bench_ensembles(HeadSpec.from_policy(policy, latent="pooled"), tokens, repeats)
    profile = [] if args.quick else [profile_update(tokens, utd, repeats, layout) for layout in LAYOUTS
                                     for utd in utds]
    report = {
        "benchmark": "learner",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__, "jax_devices": devices, "torch": torch.__version__,
                    "threads": args.threads, "load_average": list(os.getloadavg())},
        "parameters": {"quick": args.quick, "repeats": repeats, "batch": BATCH, "critics": CRITICS,
                       "head": HeadSpec.from_policy(policy).to_dict() | {"proprio_mean": None, "proprio_std": None},
                       "vlm": {"kind": policy.config.backbone.kind, "image_size": policy.config.backbone.image_size,
                               "latent_shape": list(policy.latent_shape)}},
        "updates": updates,
        "reencode": reencode,
        "ensembles": ensembles,
        "profile": profile,
    }
    print_table(updates, reencode)
    if profile:
        print_profile(profile)
    if ensembles:
        print("\nconfig/demo.yaml's learner (utd 2, batch 128):")
        for row in ensembles:
            print(f"  {row['latent']:>6} {row['critics']:>2} critics {str(row['critic_hidden']):>12}: "
                  f"{row['updates_per_s']:7.3g} updates/s  ({row['speedup_vs_first']:.2f}x the first)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()

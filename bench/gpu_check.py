"""Everything irevla measures on a GPU, in one command of at most 8 minutes (random weights in bf16; no download).

    python bench/gpu_check.py                      # on a GPU: bench/results/gpu_check.json and gpu_check.md
    python bench/gpu_check.py --dry-run            # on the CPU, every code path with tiny models (make test runs it)
    python bench/gpu_check.py --wheels DIR         # first install what the image lacks from DIR (pip --no-index)

It needs only what a GPU image has (torch, jax with CUDA, flax, optax, transformers, peft, accelerate, safetensors,
numpy; pydantic and pyyaml come with those) plus irevla installed without its dependencies (``pip install --no-deps
-e .``, or run it from a checkout). `--wheels` installs anything missing from a local wheel directory; nothing is
ever fetched from the network. It checks its imports before it builds anything and says what is missing.

For every real-size preset (irevla.policy.presets: the architectures of BLIP-2 OPT-2.7B, PaliGemma 2 3B, SmolVLM2
500M, Qwen2.5-VL 3B, Qwen3-VL 2B, Qwen2-VL 2B), one camera at the preset's native image size:

* ``build``: seconds to build the policy on the GPU, parameters, weight memory;
* ``eager``: `VLAPolicy.act` at batch 1 -- the robot's call: host arrays in, clipped action out -- p50 / p99 ms;
  `act_batch` at batch 16 (parallel environments) in observations/s; `encode` alone at batch 64 in images/s (what
  stage 1 pays per transition when it caches latents); peak memory;
* ``lora_step``: one stage-2 step at batch 8 -- LoRA r=8 on the language model + the head, bf16 autocast, AdamW --
  in samples/s, with its peak memory;
* ``compiled``: the same act measurements after `VLAPolicy.compile()` (torch.compile of the backbone's blocks --
  BLIP-2's vision model, Q-Former and OPT whole; the other families' language-model and vision blocks one by one --
  and the head, fixed shapes); ``first_call_s`` is the compilation; ``dynamo`` counts graphs and graph breaks.

Then the stage-1 learner (JAX, on the same GPU): SAC updates/s at batch 256 with 10 critics, one critic step per
actor step (utd 1), on pooled latents and on token latents of the paper's preset and of the longest latent; and the
ratio cached latents save: (update + encoding the 2 x 256 images one update needs) / update, per preset.

Phases run cheapest first -- builds and eager measurements of every preset, the learner, then the compiled
attempts, whose compilation takes longest -- and one that would start after `--budget-s` is recorded as skipped; a
phase that fails is recorded with its error and never stops the run. The JSON and the Markdown table are rewritten
after every phase, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The preset order is the order of the issue's goals: the paper's backbone first.
PRESET_ORDER = ("blip2-opt-2.7b", "paligemma2-3b-pt-224", "smolvlm2-500m", "qwen2.5-vl-3b", "qwen3-vl-2b",
                "qwen2-vl-2b")
GOALS_MS = {"blip2-opt-2.7b": 10.0, "paligemma2-3b-pt-224": 10.0, "smolvlm2-500m": 4.0}
GOAL_UPDATES_PER_S = 1000.0
# Packages the script imports (module name -> distribution): a typical GPU image has them.
REQUIRED = {"torch": "torch", "jax": "jax", "flax": "flax", "optax": "optax", "transformers": "transformers",
            "peft": "peft", "accelerate": "accelerate", "safetensors": "safetensors", "numpy": "numpy",
            "pydantic": "pydantic", "yaml": "pyyaml"}
INSTRUCTION = "press the button"
CAMERA = "front"
# Seconds a phase is expected to need on one GPU; a phase starts only if it fits in what is left of the budget.
ESTIMATE_S = {"eager": 40.0, "learner": 90.0, "compiled": 120.0}
# Tiny sizes for --dry-run (one per family, as the tests build them).
TINY = dict(image_size=32, patch_size=8, vision_hidden_size=32, hidden_size=64, heads=4, vision_layers=1, layers=2,
            num_query_tokens=4, max_text_tokens=24)


# ---------------------------------------------------------------------------------------------- environment
def missing_modules() -> list[str]:
    """Packages that are not installed, found without importing them (JAX reads its platform flags at import)."""
    missing = []
    for module in REQUIRED:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(module)
    return missing


def ensure_environment(wheels: str | None) -> None:
    """Exit with the list of what is missing (and how to bring it), or install it from `wheels` without an index."""
    missing = missing_modules()
    if missing and wheels:
        packages = [REQUIRED[m] for m in missing]
        print(f"installing {packages} from {wheels} (no index)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, *packages],
                       check=True)
        importlib.invalidate_caches()
        missing = missing_modules()
    if missing:
        packages = " ".join(REQUIRED[m] for m in missing)
        sys.exit(f"gpu_check: missing Python packages: {packages}. On a machine with the package index run "
                 f"`pip download -d wheels {packages}`, bring the wheels directory along, and rerun with "
                 f"--wheels wheels")


# --------------------------------------------------------------------------------------------------- report
class Report:
    """The JSON record and its Markdown table, both rewritten after every phase."""

    def __init__(self, out: Path, data: dict) -> None:
        self.out, self.data = out, data
        self.markdown = out.with_suffix(".md")

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.data, indent=2))
        self.markdown.write_text(markdown(self.data))


class OutOfTime(Exception):
    """Raised inside a phase when the budget runs out (SIGALRM): the phase is recorded as timed out."""


def _out_of_time(signum, frame):
    raise OutOfTime("the time budget ran out during this phase")


def phase(report: Report, record: dict, name: str, started: float, budget_s: float,
          body: Callable[[], dict]) -> dict | None:
    """Run `body` unless it would start past the budget; record its result, skip reason or error under `name`.
    A phase still running when the budget ends is interrupted (an alarm), so the whole run keeps to the budget
    (plus writing the report)."""
    elapsed = time.perf_counter() - started
    if elapsed + ESTIMATE_S.get(name, 30.0) > budget_s:
        record[name] = {"status": "skipped", "reason": f"{elapsed:.0f} s of the {budget_s:.0f} s budget used"}
        report.write()
        return None
    previous = signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(max(1, int(budget_s - elapsed)))
    try:
        result = body()
        record[name] = {"status": "ok", **result}
    except OutOfTime as exc:
        record[name] = {"status": "timed_out", "reason": str(exc)}
        print(f"  {name}: out of time", flush=True)
    except Exception as exc:  # noqa: BLE001 (a failing phase is recorded, the run goes on)
        record[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=6)}
        print(f"  {name}: {type(exc).__name__}: {exc}", flush=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    report.write()
    return record[name] if record[name]["status"] == "ok" else None


def _fmt(value, spec: str = ".3g", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def markdown(data: dict) -> str:
    """The report as Markdown tables (what docs/benchmarks.md quotes)."""
    machine = data["machine"]
    lines = [f"# gpu_check {'(dry run, CPU, tiny models) ' if data['dry_run'] else ''}-- {data['date']}", "",
             f"{machine['device']}; torch {machine['torch']}, jax {machine['jax']}, transformers "
             f"{machine['transformers']}; {data['dtype']}; budget {data['budget_s']:.0f} s, used "
             f"{_fmt(data.get('elapsed_s'), '.0f')} s.", "",
             "| preset | params | weights GB | act b1 p50 / p99 ms (eager) | compiled | goal | b16 obs/s eager / "
             "compiled | encode img/s | peak GB | LoRA step b8 samples/s | LoRA peak GB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, record in data["presets"].items():
        build, eager = record.get("build", {}), record.get("eager", {})
        compiled, lora = record.get("compiled", {}), record.get("lora_step", {})

        def act(r):
            if r.get("status") != "ok":
                return r.get("status", "-")
            return f"{r['act_b1']['p50_ms']:.2f} / {r['act_b1']['p99_ms']:.2f}"

        goal = None if data["dry_run"] else GOALS_MS.get(name)
        best = min([r["act_b1"]["p50_ms"] for r in (eager, compiled) if r.get("status") == "ok"], default=None)
        met = "" if goal is None or best is None else (" met" if best <= goal else " missed")
        lines.append(
            f"| {name} | {_fmt(build.get('parameters_b'), '.4g')} B | {_fmt(build.get('weights_gb'), '.2f')} | "
            f"{act(eager)} | {act(compiled)} | {'<= ' + format(goal, 'g') + ' ms' + met if goal else '-'} | "
            f"{_fmt(eager.get('b16_obs_per_s'), '.0f')} / {_fmt(compiled.get('b16_obs_per_s'), '.0f')} | "
            f"{_fmt(eager.get('encode_images_per_s'), '.0f')} | {_fmt(eager.get('peak_gb'), '.2f')} | "
            f"{_fmt(lora.get('samples_per_s'), '.1f') if lora.get('status') == 'ok' else lora.get('status', '-')} | "
            f"{_fmt(lora.get('peak_gb'), '.2f')} |")
    learner = data.get("learner", {})
    if learner.get("status") == "ok":
        lines += ["", f"Stage-1 learner (JAX on {learner['jax_devices']}): batch {learner['batch']}, "
                  f"{learner['critics']} critics, utd {learner['utd']} (goal >= {GOAL_UPDATES_PER_S:.0f} updates/s "
                  f"on pooled latents). Pooled latents are the head's pooled vector, the same size for every "
                  f"preset; an update includes sampling the batch from the host replay and copying it to the "
                  f"device, which dominates with real-size token latents.", "",
                  "| latents | shape | updates/s | transitions/s | compile s |", "|---|---|---:|---:|---:|"]
        for row in learner["rows"]:
            lines.append(f"| {row['latent']} ({row['source']}) | {row['latent_shape']} | {row['updates_per_s']:.0f} | "
                         f"{row['transitions_per_s']:.0f} | {row['compile_s']:.1f} |")
        lines += ["", f"| preset | latents | update ms | encoding one update's {2 * learner['batch']} images ms | "
                      f"cached vs re-encoding |",
                  "|---|---|---:|---:|---:|"]
        for row in learner.get("reencode", []):
            lines.append(f"| {row['preset']} | {row['latent']} | {1000 * row['update_s']:.2f} | "
                         f"{1000 * row['encode_s']:.1f} | {row['reencode_ratio']:.1f}x |")
    elif learner:
        lines += ["", f"Stage-1 learner: {learner.get('status')} ({learner.get('reason') or learner.get('error')})"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- the policy
def build_policy(name: str, dtype: str, device, dry_run: bool):
    import numpy as np
    import torch

    from irevla.data.stats import stats_from_arrays
    from irevla.policy.config import BackboneConfig, PolicyConfig
    from irevla.policy.presets import PRESETS, preset_backbone_config
    from irevla.policy.vla import VLAPolicy
    from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec

    if dry_run:
        backbone = BackboneConfig(kind=PRESETS[name][0], dtype=dtype, **TINY)
    else:
        backbone = preset_backbone_config(name, dtype=dtype)
    size = backbone.image_size
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (50, 4))], [rng.normal(size=(51, 4))],
                              ActionSpec.metaworld().names, METAWORLD_PROPRIO)
    config = PolicyConfig(backbone=backbone, backbone_training="frozen")
    torch.manual_seed(0)
    with torch.device(device):  # initialise where the weights will live: a 3.7 B model is slow to build on a CPU
        policy = VLAPolicy.build(config, ActionSpec.metaworld(),
                                 ObservationSpec({CAMERA: (size, size)}, METAWORLD_PROPRIO), stats)
    return policy.to(device).eval(), size


def observations(batch: int, size: int, seed: int = 0) -> list:
    import numpy as np

    from irevla.spec import Observation

    rng = np.random.default_rng(seed)
    return [Observation(images={CAMERA: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
                        proprio=rng.uniform(-1, 1, 4).astype(np.float32), instruction=INSTRUCTION)
            for _ in range(batch)]


def measure_act(policy, size: int, device, iters: int) -> dict:
    """act at batch 1 (latency), act_batch at batch 16 (throughput), peak memory."""
    from timing import Memory, latency

    memory = Memory(device)
    memory.reset()
    one, sixteen = observations(1, size)[0], observations(16, size, seed=1)
    b1 = latency(lambda: policy.act(one), iters, warmup=3, device=device)
    b16 = latency(lambda: policy.act_batch(sixteen), max(3, iters // 4), warmup=2, device=device)
    return {"act_b1": b1, "act_b16": b16, "b16_obs_per_s": 16000.0 / b16["p50_ms"],
            "peak_gb": _gb(memory.peak_mb())}


def measure_encode(policy, size: int, device, iters: int, batch: int) -> dict:
    import torch
    from timing import latency

    images = {CAMERA: torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)}
    instructions = [INSTRUCTION] * batch

    def encode():
        with torch.inference_mode():
            policy.encode(images, instructions)

    timing = latency(encode, max(3, iters // 5), warmup=2, device=device)
    return {"encode_batch": batch, "encode": timing, "encode_images_per_s": batch * 1000.0 / timing["p50_ms"]}


def measure_lora_step(policy, size: int, device, iters: int, batch: int = 8) -> dict:
    import torch
    from timing import Memory, latency

    memory = Memory(device)
    layers = policy.apply_lora(rank=8, alpha=16.0, targets="language")
    policy.train()
    parameters = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = {CAMERA: torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator
                                    ).to(device)}
    proprio = torch.randn(batch, 4, generator=generator).to(device)
    target = (torch.rand(batch, 1, 4, generator=generator) * 2 - 1).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" \
        else contextlib.nullcontext()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            predicted = policy(images, [INSTRUCTION] * batch, proprio)
        loss = (predicted.float() - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the LoRA step's loss is {float(loss)}")

    memory.reset()
    timing = latency(step, max(3, iters // 10), warmup=2, device=device)
    return {"batch": batch, "lora_layers": len(layers), "trainable_m": sum(p.numel() for p in parameters) / 1e6,
            "step": timing, "samples_per_s": batch * 1000.0 / timing["p50_ms"], "peak_gb": _gb(memory.peak_mb())}


def _gb(mb: float | None) -> float | None:
    return None if mb is None else mb / 1024


def release() -> None:
    """Free what the policies just dropped left on the GPU (call after the last reference is gone)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def dynamo_counters() -> dict:
    """What torch.compile did: graphs, graph breaks (with reasons) and recompilations."""
    from torch._dynamo.utils import counters

    breaks = dict(counters["graph_break"])
    return {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "graph_break_reasons": sorted({reason.split("\n")[0] for reason in breaks})[:5],
            "recompiles": int(counters["recompiles"].get("total", 0)) if "recompiles" in counters else 0}


# ---------------------------------------------------------------------------------------------- the learner
def learner_rows(specs: dict, dry_run: bool) -> dict:
    """SAC updates/s on each latent shape in `specs` ({label: (HeadSpec, source preset)})."""
    import jax
    from bench_learner import bench_updates

    batch, critics, transitions, repeats = (32, 2, 64, 2) if dry_run else (256, 10, 1024, 20)
    rows = []
    for label, (spec, source) in specs.items():
        row = bench_updates(spec, 1, repeats, critics=critics, batch=batch, transitions=transitions)
        rows.append({**row, "label": label, "source": source})
        print(f"  learner {label}: {row['updates_per_s']:.0f} updates/s", flush=True)
    return {"jax_devices": [str(d) for d in jax.devices()], "batch": batch, "critics": critics, "utd": 1,
            "rows": rows}


# ------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny models of every family, few iterations: checks every code path")
    parser.add_argument("--presets", nargs="+", default=list(PRESET_ORDER), choices=PRESET_ORDER)
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="phases that would not fit in this many seconds are skipped, and one still running "
                             "at the end is interrupted (default 450: with start-up and the report, the whole "
                             "command stays under 8 minutes)")
    parser.add_argument("--iters", type=int, default=50, help="timed act calls at batch 1 (others scale from it)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode for the compiled phase (default: inductor's default)")
    parser.add_argument("--wheels", default=None, help="install missing packages from this wheel directory first")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ensure_environment(args.wheels)
    # JAX shares the GPU with torch: allocate on demand instead of taking 75 % of the memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"

    import jax
    import torch
    import transformers

    from irevla.learner.flax_head import HeadSpec

    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.dry_run:
        sys.exit("gpu_check: no CUDA device visible to torch (use --dry-run to check the script on a CPU)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    iters = 3 if args.dry_run else args.iters
    dtype = "bfloat16"
    report = Report(Path(args.out), {
        "benchmark": "gpu_check", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dry_run": args.dry_run, "dtype": dtype, "budget_s": args.budget_s,
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or platform.machine(), "host": platform.node(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "jax": jax.__version__, "transformers": transformers.__version__,
                    "python": platform.python_version()},
        "presets": {name: {} for name in args.presets}})
    report.write()

    specs: dict = {}
    encode_s_per_image: dict[str, float] = {}
    for name in args.presets:  # builds, eager act, encode, LoRA step: the cheap phases of every preset first
        record = report.data["presets"][name]
        print(f"{name}: build + eager", flush=True)
        holder: dict = {}

        def build(name=name, holder=holder) -> dict:
            start = time.perf_counter()
            policy, size = build_policy(name, dtype, device, args.dry_run)
            holder.update(policy=policy, size=size)
            parameters = sum(p.numel() for p in policy.backbone.parameters())
            weights = sum(p.numel() * p.element_size() for p in policy.parameters())
            return {"build_s": time.perf_counter() - start, "parameters_b": parameters / 1e9,
                    "weights_gb": weights / 2**30, "image_size": size, "latent_shape": list(policy.latent_shape)}

        if phase(report, record, "build", started, args.budget_s, build) is None:
            continue
        policy = holder["policy"]
        specs.setdefault("pooled", (HeadSpec.from_policy(policy, latent="pooled"), name))
        longest = max((s.latent_length for label, (s, _) in specs.items() if label != "pooled"), default=0)
        if name == args.presets[0] or policy.latent_shape[0] > longest:
            specs[f"tokens:{name}"] = (HeadSpec.from_policy(policy, latent="tokens"), name)
        del policy  # the holder keeps the only reference: releasing it frees the GPU memory

        def eager(holder=holder) -> dict:
            result = measure_act(holder["policy"], holder["size"], device, iters)
            result.update(measure_encode(holder["policy"], holder["size"], device, iters,
                                         4 if args.dry_run else 64))
            return result

        measured = phase(report, record, "eager", started, args.budget_s, eager)
        if measured:
            encode_s_per_image[name] = 1.0 / measured["encode_images_per_s"]
            print(f"  act b1 p50 {measured['act_b1']['p50_ms']:.2f} ms, b16 {measured['b16_obs_per_s']:.0f} obs/s",
                  flush=True)
        phase(report, record, "lora_step", started, args.budget_s,
              lambda holder=holder: measure_lora_step(holder["policy"], holder["size"], device, iters))
        holder.clear()
        release()

    def learner() -> dict:
        result = learner_rows(specs, args.dry_run)
        images = 2 * result["batch"]  # observation and next observation of one update's batch (utd 1)
        update_s = {row["label"]: row["update_s"] for row in result["rows"]}
        result["reencode"] = [
            {"preset": preset, "latent": label.split(":")[0], "update_s": update_s[label],
             "encode_s": encode_s_per_image[preset] * images,
             "reencode_ratio": (update_s[label] + encode_s_per_image[preset] * images) / update_s[label]}
            for preset in encode_s_per_image for label in update_s
            if label == "pooled" or label == f"tokens:{preset}"]
        return result

    print("learner", flush=True)
    phase(report, report.data, "learner", started, args.budget_s, learner)

    for name in args.presets:  # the compiled attempts last: compilation is the slowest part
        record = report.data["presets"][name]
        if record.get("build", {}).get("status") != "ok":
            continue
        print(f"{name}: compiled", flush=True)

        def compiled(name=name) -> dict:
            import torch._dynamo

            holder = dict(zip(("policy", "size"), build_policy(name, dtype, device, args.dry_run), strict=True))
            torch._dynamo.reset()  # every preset's head shares one forward: fresh caches, no recompile limit
            torch._dynamo.utils.counters.clear()
            try:
                modules = holder["policy"].compile(mode=args.compile_mode,
                                                   backend="eager" if args.dry_run else "inductor")
                result = measure_act(holder["policy"], holder["size"], device, iters)
                result.update(mode=args.compile_mode or "default", modules=modules, dynamo=dynamo_counters())
                return result
            finally:
                holder.clear()
                torch._dynamo.reset()
                release()

        measured = phase(report, record, "compiled", started, args.budget_s, compiled)
        if measured:
            print(f"  act b1 p50 {measured['act_b1']['p50_ms']:.2f} ms (compiled in "
                  f"{measured['act_b1']['first_call_s']:.0f} s)", flush=True)
    report.data["elapsed_s"] = time.perf_counter() - started
    report.write()
    print(report.markdown.read_text())
    print(f"wrote {report.out} and {report.markdown}")
    return report.data


if __name__ == "__main__":
    main()

"""Benchmarks of the VLA policy: a CPU table of the tiny models, and an attempts mode for act latency on a GPU.

**CPU table** (the default; `make bench`):

    python bench/bench_policy.py [--kinds blip2 qwen2_vl ...] [--image-size 64] [--threads 1] [--repeats 20]
                                 [--out bench/results/policy.json]

Per backbone kind, with the small random-weight models the tests and the simulated demo use (config/sft.yaml's
sizes; no download):

* ``act_ms``: one `VLAPolicy.act(observation)` (the robot loop's call), median over `repeats`;
* ``encode_per_s``: latents/s of `encode` at batch 32 (stage 1 encodes every observation once);
* ``head_train_per_s``: samples/s of a head forward + backward + AdamW step on stored latents at batch 256 (what
  stage-1 RL trains; the VLM is not involved);
* ``sft_lora_per_s`` / ``sft_full_per_s``: samples/s of one SFT step (augmentation, forward, masked MSE, backward,
  AdamW) at batch 32 with LoRA and with the whole backbone training;
* ``save_s`` / ``load_s`` / ``checkpoint_mb``: `save_policy` / `load_policy` (hash-verified) of the full-training
  policy and its size on disk.

Medians of several runs after a warm-up, because other load on a small machine makes single runs noisy. Torch runs
with `--threads` threads (default 1: on a busy 2-core machine two OpenMP threads are often slower than one).

**Attempts mode** (chosen by any of `--device cuda`, `--preset`, `--attempts`, `--quick`): the GPU question of
issue 3 -- can a BLIP-2 OPT-2.7B-shaped policy (random weights, ~3.8 B parameters) act at >= 100 Hz?

    python bench/bench_policy.py --device cuda --preset blip2-opt-2.7b --dtype bfloat16 \\
        --out bench/results/policy_gpu.json
    python bench/bench_policy.py --quick          # CPU smoke of every code path (tiny model, < 1 min)

One model is built (backbone frozen: what a deployed, LoRA-merged policy runs), then each attempt is measured on
its own and recorded in the JSON with its p50/p99 latencies or the error it hit (a failing attempt never stops the
run; the JSON is rewritten after every phase, so a run cut short keeps what it measured):

* ``eager``: `policy.act` (batch 1) / `act_batch` (batch 8) -- the contract call, host arrays in, clipped actions
  out -- and `encode` alone on device-resident images;
* ``static_prefix``: the language model's KV of the fixed instruction computed once and reused. The adapter puts
  the image queries *before* the instruction, so the instruction's KV depends on the image and cannot be cached as
  it is; this attempt measures the reordered design (instruction first, then the queries attending to its cached
  KV) and checks that the cached forward equals an uncached forward of the same reordered sequence. Its actions are
  not the current policy's (different token order): it measures what that design change would buy;
* ``graph_capture`` / ``static_prefix_graph`` (CUDA only): the whole act computation (preprocessing, ViT, Q-Former,
  LM, head, unnormalisation) for a fixed instruction captured once in a `torch.cuda.CUDAGraph` and replayed, with
  the host-to-device copy of the images and the copy of the actions back included. Checked against `predict` (the
  full sequence) on every device, so the CPU run verifies the captured function;
* ``cuda_graphs``: `torch.compile(mode="reduce-overhead")` (inductor + CUDA graphs) of the vision model, Q-Former,
  language model and head, then `policy.act` as in eager (CUDA only);
* ``compile``: the same modules with `torch.compile(mode=--compile-mode)` (default "max-autotune-no-cudagraphs").

Also: parameter count, weight memory, peak memory per phase (`torch.cuda.max_memory_allocated`, reset before each),
and the LoRA SFT step (batch `--sft-batch`, bf16 autocast on CUDA, LoRA r=8 on the language model + the head,
AdamW, grad clipping) in samples/s. Timings synchronise the device before and after every call, after warm-up;
``first_call_s`` is the first call's time (compilation / capture). Phases run cheapest first (eager, static
prefix, graph captures, SFT, then the torch.compile attempts, whose compilation takes minutes); `--time-budget-s`
skips (and records as skipped) whatever would start after the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from irevla.data.stats import stats_from_arrays
from irevla.policy.backbones import KINDS
from irevla.policy.checkpoint import load_policy, save_policy
from irevla.policy.config import BackboneConfig, PolicyConfig
from irevla.policy.images import random_shift
from irevla.policy.sft import masked_mse
from irevla.policy.vla import VLAPolicy
from irevla.spec import METAWORLD_PROPRIO, Action, ActionSpec, ContractError, Observation, ObservationSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import Memory, latency  # noqa: E402 (bench/ is not a package)

INSTRUCTION = "press the button"
CAMERA = "corner2"


def make_policy(kind: str, image_size: int, training: str) -> VLAPolicy:
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (50, 4))], [rng.normal(size=(51, 4))],
                              ActionSpec.metaworld().names, METAWORLD_PROPRIO)
    config = PolicyConfig(backbone=BackboneConfig(kind=kind, image_size=image_size), backbone_training=training)
    return VLAPolicy.build(config, ActionSpec.metaworld(),
                           ObservationSpec({"corner2": (image_size, image_size)}, METAWORLD_PROPRIO), stats)


def timed(function, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kind(kind: str, image_size: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    result: dict = {"kind": kind, "image_size": image_size}
    policy = make_policy(kind, image_size, "lora")
    counts = policy.parameter_counts()
    result.update(backbone_params=counts["backbone"], head_params=counts["head"],
                  latent_shape=list(policy.latent_shape))

    observation = Observation(images={"corner2": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)},
                              proprio=np.zeros(4, np.float32), instruction=INSTRUCTION)
    result["act_ms"] = 1000 * timed(lambda: policy.act(observation), repeats)

    images = {"corner2": torch.randint(0, 256, (32, image_size, image_size, 3), dtype=torch.uint8)}
    with torch.no_grad():
        result["encode_per_s"] = 32 / timed(lambda: policy.encode(images, [INSTRUCTION] * 32), max(3, repeats // 4))
        latent = policy.encode(images, [INSTRUCTION] * 32)
    tokens = latent.tokens.repeat(8, 1, 1)  # batch 256
    mask = latent.mask.repeat(8, 1)
    proprio, target = torch.randn(256, 4), torch.rand(256, 1, 4) * 2 - 1
    head_optimizer = torch.optim.AdamW(policy.head.parameters(), lr=1e-4)

    def head_step():
        loss = ((policy.head(tokens, mask, proprio) - target) ** 2).mean()
        head_optimizer.zero_grad()
        loss.backward()
        head_optimizer.step()

    result["head_train_per_s"] = 256 / timed(head_step, max(3, repeats // 4))

    for training in ("lora", "full"):
        train_policy = policy if training == "lora" else make_policy(kind, image_size, "full")
        backbone_params, head_params = train_policy.parameter_groups()
        optimizer = torch.optim.AdamW([{"params": backbone_params, "lr": 1e-4}, {"params": head_params}], lr=1e-3)
        batch_images = {"corner2": torch.randint(0, 256, (32, image_size, image_size, 3), dtype=torch.uint8)}
        actions, action_mask = torch.rand(32, 1, 4) * 2 - 1, torch.ones(32, 1, dtype=torch.bool)
        generator = torch.Generator().manual_seed(0)

        def sft_step(p=train_policy, o=optimizer, images=batch_images, actions=actions, mask=action_mask,
                     generator=generator):
            shifted = {c: random_shift(v, 4, generator) for c, v in images.items()}
            loss = masked_mse(p(shifted, [INSTRUCTION] * 32, torch.zeros(32, 4)), actions, mask)
            o.zero_grad()
            loss.backward()
            o.step()

        result[f"sft_{training}_per_s"] = 32 / timed(sft_step, max(3, repeats // 4))
        if training == "full":
            directory = Path(tempfile.mkdtemp())
            try:
                target = directory / "ckpt"
                result["save_s"] = timed(lambda p=train_policy, t=target: save_policy(p, t), 3, warmup=1)
                result["load_s"] = timed(lambda t=target: load_policy(t), 3, warmup=1)
                result["checkpoint_mb"] = sum(f.stat().st_size for f in (directory / "ckpt").iterdir()) / 1e6
            finally:
                shutil.rmtree(directory)
    return result


def print_table(results: list[dict]) -> None:
    columns = ("kind", "act_ms", "encode_per_s", "head_train_per_s", "sft_lora_per_s", "sft_full_per_s", "save_s",
               "load_s", "checkpoint_mb")
    print("  ".join(f"{c:>16s}" for c in columns))
    for row in results:
        print("  ".join(f"{row[c]:>16.4g}" if isinstance(row[c], float) else f"{row[c]:>16}" for c in columns))


# =========================================================================================== attempts mode
ATTEMPTS = ("eager", "static_prefix", "graph_capture", "static_prefix_graph", "cuda_graphs", "compile")
TORCH_COMPILE_ATTEMPTS = ("cuda_graphs", "compile")  # run after SFT: their compilation takes minutes
CUDA_ONLY = {"graph_capture": "a CUDA graph needs a CUDA device",
             "static_prefix_graph": "a CUDA graph needs a CUDA device",
             "cuda_graphs": "torch.compile mode='reduce-overhead' is CUDA graphs: needs a CUDA device"}
GOAL_HZ = 100.0


class Skipped(Exception):
    """An attempt that cannot run here; `details` (e.g. a correctness check that did run) go into its record."""

    def __init__(self, reason: str, **details) -> None:
        super().__init__(reason)
        self.details = details


def observations(batch: int, image_size: int, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    return [Observation(images={CAMERA: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)},
                        proprio=rng.uniform(-1, 1, 4).astype(np.float32), instruction=INSTRUCTION)
            for _ in range(batch)]


def build_latency_policy(preset: str, kind: str, dtype: str, image_size: int, device: torch.device) -> VLAPolicy:
    """A frozen-backbone policy (a deployed policy runs LoRA merged), built directly on `device`."""
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (50, 4))], [rng.normal(size=(51, 4))],
                              ActionSpec.metaworld().names, METAWORLD_PROPRIO)
    if preset == "tiny":
        backbone = BackboneConfig(kind=kind, image_size=image_size, dtype=dtype)
    else:
        from irevla.policy.presets import preset_backbone_config

        backbone = preset_backbone_config(preset, dtype=dtype)
    config = PolicyConfig(backbone=backbone, backbone_training="frozen")
    with torch.device(device):  # initialise the weights where they will run: a 3.8 B model is slow to build on a CPU
        policy = VLAPolicy.build(config, ActionSpec.metaworld(),
                                 ObservationSpec({CAMERA: (image_size, image_size)}, METAWORLD_PROPRIO), stats)
    return policy.to(device).eval()


def to_actions(policy: VLAPolicy, actions: torch.Tensor) -> list[Action]:
    """What `act_batch` does with the network's output: to host, refuse non-finite values, clip."""
    array = actions.float().cpu().numpy()
    if not np.isfinite(array).all():
        raise ContractError("the network produced non-finite actions")
    return [Action(policy.action_spec.clip(row), policy.action_spec) for row in array]


# ------------------------------------------------------------------------------ the act computation as tensors
class FixedInstructionPath:
    """`VLAPolicy.act`'s computation as device-tensor operations for one fixed instruction, so that it can be
    captured in a CUDA graph (no host work, no host-device synchronisation inside) and so that the instruction's
    language-model KV can be cached.

    The text embeddings, the attention mask (already expanded to the 4-D mask the language model builds from it)
    and the position ids depend only on the instruction: they are computed once here. `act_full` is the policy's
    token order (image queries, then the instruction) and must equal `VLAPolicy.predict`; `act_prefix` is the
    reordered design (instruction first, its KV and hidden states cached) -- see the module docstring."""

    def __init__(self, policy: VLAPolicy, batch: int) -> None:
        backbone = policy.backbone
        if backbone.kind != "blip2":
            raise NotImplementedError(f"the fixed-instruction path is written for BLIP-2 only (this backbone is "
                                      f"{backbone.kind})")
        if len(policy.cameras) != 1:
            raise NotImplementedError("the fixed-instruction path handles one camera")
        from transformers.masking_utils import create_causal_mask

        self.policy, self.batch = policy, batch
        self.model = backbone.model
        self.language_model = backbone.model.language_model.base_model
        device, self.dtype = backbone.device, backbone.dtype
        native = int(self.model.config.vision_config.image_size)
        self.size = backbone.config.image_size if backbone.config.pretrained is None else \
            (backbone.config.image_size or native)
        self.interpolate = self.size != native
        self.mean = torch.tensor(backbone.image_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(backbone.image_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        text = backbone.tokenizer(backbone.prompts([INSTRUCTION] * batch))
        self.text_mask = text.mask.to(device)
        queries = int(self.model.config.num_query_tokens)
        with torch.no_grad():
            self.text_embeddings = self.model.get_input_embeddings()(text.ids.to(device))
        ones = torch.ones(batch, queries, dtype=torch.bool, device=device)

        # The policy's order: queries, then the instruction.
        self.full_mask = torch.cat([ones, self.text_mask], dim=1)
        self.full_positions = self._positions(self.full_mask)
        dummy = torch.empty(batch, self.full_mask.shape[1], 1, dtype=self.text_embeddings.dtype, device=device)
        self.full_mask_4d = create_causal_mask(config=self.language_model.config, inputs_embeds=dummy,
                                               attention_mask=self.full_mask.long(), past_key_values=None)

        # The reordered design: the instruction (computed once, KV cached), then the queries.
        self.prefix_mask = torch.cat([self.text_mask, ones], dim=1)
        with torch.no_grad():
            prefix = self.language_model(inputs_embeds=self.text_embeddings, attention_mask=self.text_mask.long(),
                                         use_cache=True)
        self.prefix_hidden = prefix.last_hidden_state
        self.prefix_kv = [(layer[0], layer[1]) for layer in prefix.past_key_values]
        self.prefix_positions = self._positions(self.prefix_mask)[:, self.text_mask.shape[1]:]
        dummy = torch.empty(batch, queries, 1, dtype=self.text_embeddings.dtype, device=device)
        self.prefix_mask_4d = create_causal_mask(config=self.language_model.config, inputs_embeds=dummy,
                                                 attention_mask=self.prefix_mask.long(),
                                                 past_key_values=self._prefix_cache())

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        mask = mask.long()
        return torch.cumsum(mask, dim=1) * mask - 1  # OPT's own rule (padding -> -1)

    def queries(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) on the device -> the Q-Former's query embeddings in the LM's input space; the same
        arithmetic as `irevla.policy.images.to_pixels` with the mean/std tensors made once."""
        pixels = images.permute(0, 3, 1, 2).float().div(255.0)
        if pixels.shape[-2:] != (self.size, self.size):
            pixels = torch.nn.functional.interpolate(pixels, size=(self.size, self.size), mode="bilinear",
                                                     align_corners=False, antialias=True)
        pixels = ((pixels - self.mean) / self.std).to(self.dtype)
        return self.model.get_image_features(pixels, interpolate_pos_encoding=self.interpolate,
                                             return_dict=True).pooler_output.to(self.text_embeddings.dtype)

    def actions(self, hidden: torch.Tensor, mask: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        policy = self.policy
        unit = policy.head(hidden.to(policy.head.mlp.out.weight.dtype), mask,
                           policy.normalizer.proprio_to_unit(proprio))
        return policy.normalizer.action_from_unit(unit)[:, 0]

    def act_full(self, images: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([self.queries(images), self.text_embeddings], dim=1)
        hidden = self.language_model(inputs_embeds=inputs, attention_mask=self.full_mask_4d,
                                     position_ids=self.full_positions, use_cache=False).last_hidden_state
        return self.actions(hidden, self.full_mask, proprio)

    def _prefix_cache(self):
        """A cache holding the instruction's KV (a new one per call: the forward appends the queries' KV)."""
        from transformers import DynamicCache

        return DynamicCache(self.prefix_kv, config=self.language_model.config)

    def prefix_hidden_states(self, queries: torch.Tensor) -> torch.Tensor:
        """The queries' last hidden states, attending to the cached instruction KV (mask and positions made
        once, so no host-device synchronisation happens inside)."""
        return self.language_model(inputs_embeds=queries, attention_mask=self.prefix_mask_4d,
                                   position_ids=self.prefix_positions, past_key_values=self._prefix_cache(),
                                   use_cache=True).last_hidden_state

    def act_prefix(self, images: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([self.prefix_hidden, self.prefix_hidden_states(self.queries(images))], dim=1)
        return self.actions(hidden, self.prefix_mask, proprio)

    @torch.no_grad()
    def check_full(self, observations_batch: list[Observation]) -> dict:
        """max |act_full - VLAPolicy.predict| in action units on the same observations."""
        images, instructions, proprio = self.policy.observations_to_batch(observations_batch)
        device = self.policy.device
        expected = self.policy.predict(images, instructions, proprio)[:, 0].float()
        got = self.act_full(images[CAMERA].to(device), proprio.to(device)).float()
        return {"max_abs_diff_vs_predict": float((got - expected).abs().max())}

    @torch.no_grad()
    def check_prefix(self, observations_batch: list[Observation]) -> dict:
        """max |cached - uncached| of the reordered sequence's last hidden states over its real tokens."""
        images, _, _ = self.policy.observations_to_batch(observations_batch)
        queries = self.queries(images[CAMERA].to(self.policy.device))
        uncached = self.language_model(inputs_embeds=torch.cat([self.text_embeddings, queries], dim=1),
                                       attention_mask=self.prefix_mask.long(), use_cache=False).last_hidden_state
        cached = torch.cat([self.prefix_hidden, self.prefix_hidden_states(queries)], dim=1)
        real = self.prefix_mask.unsqueeze(-1)
        difference = ((cached.float() - uncached.float()).abs() * real).max()
        return {"max_abs_diff_cached_vs_uncached": float(difference),
                "hidden_abs_max": float((uncached.float().abs() * real).max())}


def tensor_act(policy: VLAPolicy, compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               observations_batch: list[Observation], graph: bool) -> tuple[Callable[[], list[Action]], dict]:
    """A contract-equivalent act call around `compute` (uint8 images, raw proprio on the device -> actions):
    observations -> tensors (as `act_batch`), copy to the device, compute (eagerly or as a captured CUDA graph),
    actions back to the host, checked and clipped. Returns the call and facts about the set-up."""
    device = policy.device
    images, _, proprio = policy.observations_to_batch(observations_batch)
    static_images, static_proprio = images[CAMERA].to(device), proprio.to(device)
    info: dict = {}
    if not graph:
        def call() -> list[Action]:
            batch_images, _, batch_proprio = policy.observations_to_batch(observations_batch)
            with torch.no_grad():
                return to_actions(policy, compute(batch_images[CAMERA].to(device), batch_proprio.to(device)))
        return call, info

    with torch.no_grad():
        eager_out = compute(static_images, static_proprio).clone()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up off the default stream, as torch.cuda.graphs asks
            for _ in range(3):
                compute(static_images, static_proprio)
        torch.cuda.current_stream(device).wait_stream(stream)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            static_out = compute(static_images, static_proprio)
        cuda_graph.replay()
        torch.cuda.synchronize(device)
        info["max_abs_diff_replay_vs_eager"] = float((static_out.float() - eager_out.float()).abs().max())

    def call() -> list[Action]:
        batch_images, _, batch_proprio = policy.observations_to_batch(observations_batch)
        static_images.copy_(batch_images[CAMERA])
        static_proprio.copy_(batch_proprio)
        cuda_graph.replay()
        return to_actions(policy, static_out)

    return call, info


# --------------------------------------------------------------------------------------------- the attempts
def compile_targets(policy: VLAPolicy) -> dict[str, torch.nn.Module]:
    """The modules `encode` + the head call as units: compiling them compiles everything act runs on the device."""
    model = policy.backbone.model
    if policy.config.backbone.kind == "blip2":
        targets = {"vision_model": model.vision_model, "qformer": model.qformer,
                   "language_model": model.language_model.base_model}
    else:
        targets = {"model": model.model}
    targets["head"] = policy.head
    return targets


@contextlib.contextmanager
def compiled(modules: dict[str, torch.nn.Module], backend: str, mode: str | None):
    """`Module.compile` each of `modules` in place for the duration, then restore them and drop dynamo's caches."""
    options: dict = {"backend": backend, "dynamic": False}
    if backend == "inductor":
        options["mode"] = mode
    try:
        for module in modules.values():
            module.compile(**options)
        yield
    finally:
        for module in modules.values():
            module._compiled_call_impl = None  # where Module.compile keeps the compiled call
        torch._dynamo.reset()


def dynamo_counters() -> dict:
    """Graph breaks and CUDA-graph skips (a break or a skip is where compiled code falls back to Python)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    return {"graph_breaks": int(sum(counters["graph_break"].values())),
            "graph_break_reasons": sorted(counters["graph_break"])[:10],
            "unique_graphs": int(counters["stats"]["unique_graphs"]),
            "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"])}


class AttemptRunner:
    """Runs the attempts on one policy; each returns the fields of its record or raises (recorded, not fatal)."""

    def __init__(self, policy: VLAPolicy, args: argparse.Namespace, device: torch.device) -> None:
        self.policy, self.args, self.device = policy, args, device
        self.observations = {batch: observations(batch, args.image_size, seed=batch) for batch in args.batch_sizes}

    def measure_act(self, act_for_batch: Callable[[int], Callable[[], object]]) -> dict:
        return {f"act_b{batch}": latency(act_for_batch(batch), self.args.iters, self.args.warmup, self.device)
                for batch in self.args.batch_sizes}

    def policy_act(self, batch: int) -> Callable[[], object]:
        batch_observations = self.observations[batch]
        if batch == 1:
            return lambda: self.policy.act(batch_observations[0])
        return lambda: self.policy.act_batch(batch_observations)

    def measure_encode(self) -> dict:
        result = {}
        for batch in self.args.batch_sizes:
            images = {CAMERA: torch.from_numpy(np.stack([o.images[CAMERA] for o in self.observations[batch]]))
                      .to(self.device)}
            instructions = [INSTRUCTION] * batch

            def encode(images=images, instructions=instructions):
                with torch.no_grad():
                    return self.policy.encode(images, instructions)

            result[f"encode_b{batch}"] = latency(encode, self.args.iters, self.args.warmup, self.device)
        return result

    def eager(self) -> dict:
        return {**self.measure_act(self.policy_act), **self.measure_encode()}

    def torch_compile(self, mode: str) -> dict:
        backend = self.args.compile_backend
        if mode == "reduce-overhead" and (self.device.type != "cuda" or backend != "inductor"):
            raise Skipped(CUDA_ONLY["cuda_graphs"] if self.device.type != "cuda" else
                          f"CUDA graphs come from the inductor backend (--compile-backend is {backend})")
        torch._dynamo.reset()
        with contextlib.suppress(ImportError):
            from torch._dynamo.utils import counters

            counters.clear()  # graph breaks / CUDA-graph skips of this attempt alone
        targets = compile_targets(self.policy)
        with compiled(targets, backend, mode):
            result = {"compiled": sorted(targets), "backend": backend,
                      "mode": mode if backend == "inductor" else None, **self.measure_act(self.policy_act),
                      **self.measure_encode()}
            result["dynamo"] = dynamo_counters()
        return result

    def graph_or_prefix(self, prefix: bool, graph: bool) -> dict:
        result: dict = {}
        paths = {batch: FixedInstructionPath(self.policy, batch) for batch in self.args.batch_sizes}
        check_batch = max(self.args.batch_sizes)
        result["check"] = (paths[check_batch].check_prefix(self.observations[check_batch]) if prefix else
                           paths[check_batch].check_full(self.observations[check_batch]))
        if prefix:
            result["note"] = ("reordered design: instruction first (KV + hidden states cached), image queries "
                              "after; the current adapter puts the queries first, where the instruction's KV "
                              "depends on the image")
        if graph and self.device.type != "cuda":
            raise Skipped(CUDA_ONLY["graph_capture"], **result)
        setup = {}
        calls = {}
        for batch, path in paths.items():
            compute = path.act_prefix if prefix else path.act_full
            calls[batch], setup[f"b{batch}"] = tensor_act(self.policy, compute, self.observations[batch], graph)
        if graph:
            result["capture"] = setup
        result.update(self.measure_act(lambda batch: calls[batch]))
        return result

    def run(self, name: str) -> dict:
        if name == "eager":
            return self.eager()
        if name == "static_prefix":
            return self.graph_or_prefix(prefix=True, graph=False)
        if name == "graph_capture":
            return self.graph_or_prefix(prefix=False, graph=True)
        if name == "static_prefix_graph":
            return self.graph_or_prefix(prefix=True, graph=True)
        if name == "cuda_graphs":
            return self.torch_compile("reduce-overhead")
        if name == "compile":
            return self.torch_compile(self.args.compile_mode)
        raise ValueError(f"unknown attempt {name!r}")

    def sft_lora(self) -> dict:
        """LoRA SFT step rate: forward (autocast) + masked MSE + backward + grad clip + AdamW; LoRA merged after."""
        policy, args, device = self.policy, self.args, self.device
        batch = args.sft_batch
        layers = policy.apply_lora(rank=8, alpha=16.0, targets="language")
        optimizer = None
        try:
            backbone_params, head_params = policy.parameter_groups()
            optimizer = torch.optim.AdamW([{"params": backbone_params, "lr": 1e-4}, {"params": head_params}],
                                          lr=1e-4, weight_decay=0.01)
            parameters = backbone_params + head_params
            batch_observations = observations(batch, args.image_size, seed=100)
            images, instructions, proprio = policy.observations_to_batch(batch_observations)
            images = {camera: tensor.to(device) for camera, tensor in images.items()}
            proprio = proprio.to(device)
            actions = (torch.rand(batch, policy.head.chunk, policy.action_spec.dim, device=device) * 2 - 1)
            mask = torch.ones(batch, policy.head.chunk, dtype=torch.bool, device=device)
            autocast = args.sft_autocast == "bf16"
            policy.train()

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    predicted = policy(images, instructions, proprio)
                loss = masked_mse(predicted.float(), actions, mask)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()

            timing = latency(step, args.sft_iters, args.warmup, device)
            return {"batch": batch, "autocast": args.sft_autocast, "lora_rank": 8, "lora_layers": len(layers),
                    "lora_dtype": str(backbone_params[0].dtype).replace("torch.", ""),
                    "trainable_backbone_params": sum(p.numel() for p in backbone_params),
                    "trainable_head_params": sum(p.numel() for p in head_params),
                    "step": timing, "samples_per_s": batch / (timing["p50_ms"] / 1000)}
        finally:
            optimizer = None  # noqa: F841 -- frees the AdamW state before the attempts that follow
            policy.zero_grad(set_to_none=True)
            policy.merge_lora()  # back to a plain frozen backbone for the attempts that follow
            policy.set_backbone_training("frozen")
            policy.eval()


def record_phase(function: Callable[[], dict], memory: Memory) -> dict:
    """Run one phase; its fields with status ok, or its skip / not-implemented reason, or its error."""
    memory.reset()
    start = time.perf_counter()
    try:
        record = {"status": "ok", **function()}
    except Skipped as skip:
        record = {"status": "skipped", "reason": str(skip), **skip.details}
    except NotImplementedError as exc:
        record = {"status": "not_implemented", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 -- an attempt that fails is a result, not the end of the run
        record = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc()[-4000:]}
    record["seconds"] = time.perf_counter() - start
    record["peak_memory_mb"] = memory.peak_mb()
    return record


def phase_order(attempts: list[str], sft: bool) -> list[str]:
    """Cheapest first, so that a run cut short has the most: the torch.compile attempts after SFT."""
    first = [a for a in ATTEMPTS if a in attempts and a not in TORCH_COMPILE_ATTEMPTS]
    last = [a for a in ATTEMPTS if a in attempts and a in TORCH_COMPILE_ATTEMPTS]
    return first + (["sft_lora"] if sft else []) + last


def summarize(report: dict) -> dict:
    best = None
    for name, record in report["attempts"].items():
        act = record.get("act_b1")
        if record.get("status") == "ok" and act and (best is None or act["p50_ms"] < best[1]):
            best = (name, act["p50_ms"], act["p99_ms"])
    summary: dict = {"goal_hz": GOAL_HZ}
    if best is not None:
        summary.update(best_act_b1_attempt=best[0], best_act_b1_p50_ms=best[1], best_act_b1_p99_ms=best[2],
                       best_act_b1_hz=1000 / best[1], meets_goal_p50=1000 / best[1] >= GOAL_HZ)
    return summary


def print_attempts(report: dict) -> None:
    def cell(record: dict, key: str, field: str = "p50_ms") -> str:
        value = record.get(key, {}).get(field) if isinstance(record.get(key), dict) else None
        return f"{value:.3f}" if isinstance(value, float) else "-"

    largest = max(report["parameters"]["batch_sizes"])
    columns = ["attempt", "status", "act_b1_p50_ms", "act_b1_p99_ms", "encode_b1_p50_ms", "peak_MB"]
    if largest > 1:
        columns.insert(4, f"act_b{largest}_p50_ms")
    print("  ".join(f"{c:>20s}" for c in columns))
    for name, record in report["attempts"].items():
        peak = record.get("peak_memory_mb")
        row = [name, record["status"], cell(record, "act_b1"), cell(record, "act_b1", "p99_ms"),
               cell(record, "encode_b1"), f"{peak:.0f}" if peak is not None else "-"]
        if largest > 1:
            row.insert(4, cell(record, f"act_b{largest}"))
        print("  ".join(f"{v:>20s}" for v in row))
        if record["status"] != "ok":
            print(f"{'':>20s}  {record.get('reason') or record.get('error', '')}"[:300])
    sft = report.get("sft_lora")
    if sft:
        if sft["status"] == "ok":
            peak = f", peak {sft['peak_memory_mb']:.0f} MB" if sft["peak_memory_mb"] is not None else ""
            print(f"LoRA SFT: {sft['samples_per_s']:.1f} samples/s at batch {sft['batch']} "
                  f"(step p50 {sft['step']['p50_ms']:.1f} ms{peak})")
        else:
            print(f"LoRA SFT: {sft['status']}: {sft.get('reason') or sft.get('error', '')}"[:300])


def run_attempts(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    memory = Memory(device)
    run_start = time.perf_counter()
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        machine.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                       gpu_memory_gb=torch.cuda.get_device_properties(device).total_memory / 2**30)
    report: dict = {
        "benchmark": "policy_latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "parameters": {"preset": args.preset, "kind": args.kinds[0] if args.preset == "tiny" else None,
                       "dtype": args.dtype, "camera_image_size": args.image_size, "iters": args.iters,
                       "warmup": args.warmup, "batch_sizes": args.batch_sizes, "sft_batch": args.sft_batch,
                       "sft_iters": args.sft_iters, "sft_autocast": args.sft_autocast, "attempts": args.attempts,
                       "compile_mode": args.compile_mode, "compile_backend": args.compile_backend,
                       "quick": args.quick, "time_budget_s": args.time_budget_s, "instruction": INSTRUCTION},
        "attempts": {},
    }

    def write() -> None:
        report["elapsed_s"] = time.perf_counter() - run_start
        report["summary"] = summarize(report)
        out.write_text(json.dumps(report, indent=2))

    memory.reset()
    start = time.perf_counter()
    policy = build_latency_policy(args.preset, args.kinds[0], args.dtype, args.image_size, device)
    counts = policy.parameter_counts()
    backbone_config = policy.config.backbone
    report["model"] = {
        "kind": backbone_config.kind, "preset": backbone_config.preset, "model_image_size": backbone_config.image_size,
        "backbone_params": counts["backbone"], "head_params": counts["head"],
        "total_params": counts["backbone"] + counts["head"],
        "weight_mb": sum(t.numel() * t.element_size() for t in policy.state_dict().values()) / 2**20,
        "latent_shape": list(policy.latent_shape),
        "attn_implementation": getattr(policy.backbone.model.config, "_attn_implementation", None),
        "build_s": time.perf_counter() - start, "build_peak_memory_mb": memory.peak_mb(),
        "allocated_after_build_mb": memory.allocated_mb()}
    print(f"built {policy.describe()} on {device} in {report['model']['build_s']:.1f} s", flush=True)
    write()

    runner = AttemptRunner(policy, args, device)
    for phase in phase_order(args.attempts, args.sft_batch > 0):
        if args.time_budget_s and time.perf_counter() - run_start > args.time_budget_s:
            record = {"status": "skipped", "reason": f"time budget of {args.time_budget_s} s spent"}
        elif phase == "sft_lora":
            record = record_phase(runner.sft_lora, memory)
        elif device.type != "cuda" and phase == "cuda_graphs":
            record = {"status": "skipped", "reason": CUDA_ONLY[phase]}
        else:
            record = record_phase(lambda phase=phase: runner.run(phase), memory)
        if phase == "sft_lora":
            report["sft_lora"] = record
        else:
            report["attempts"][phase] = record
        print(f"{phase}: {record['status']} ({record.get('seconds', 0):.1f} s)", flush=True)
        write()
    report["process_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write()
    print_attempts(report)
    print(f"wrote {out}")
    return report


def parse_attempts(text: str) -> list[str]:
    names = list(ATTEMPTS) if text == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTEMPTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown attempts {unknown}; known: {', '.join(ATTEMPTS)} (or 'all')")
    return names


def parse_batch_sizes(text: str) -> list[int]:
    sizes = sorted({int(size) for size in text.split(",") if size.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("batch sizes: positive integers, comma-separated")
    return sizes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["blip2", "qwen2_vl"], choices=KINDS,
                        help="CPU table: backbone kinds; attempts mode with the tiny preset: the first one")
    parser.add_argument("--image-size", type=int, default=None,
                        help="camera image side (default 64; with a preset, the preset's input size); the tiny "
                             "model also sees this size, a preset model resizes to its own")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="CPU table: timed runs per figure")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/policy.json for the CPU "
                                                   "table, policy_gpu.json / policy_latency_cpu.json otherwise)")
    attempts = parser.add_argument_group("attempts mode (act latency; chosen by any of these options)")
    attempts.add_argument("--device", choices=("cpu", "cuda"), default=None)
    attempts.add_argument("--preset", default=None,
                          help="'tiny' (the CPU test model) or a real-size architecture of irevla.policy.presets, "
                               "e.g. blip2-opt-2.7b (random weights)")
    attempts.add_argument("--attempts", type=parse_attempts, default=None,
                          help=f"comma-separated, or 'all' (default): {', '.join(ATTEMPTS)}")
    attempts.add_argument("--quick", action="store_true",
                          help="CPU smoke: tiny model, 3 timed calls, batch 1 and 2, every attempt")
    attempts.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default=None,
                          help="backbone weights (default bfloat16 on CUDA, float32 on the CPU); the head stays "
                               "float32")
    attempts.add_argument("--iters", type=int, default=None, help="timed calls per figure (default 100; quick 3)")
    attempts.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5; quick 1)")
    attempts.add_argument("--batch-sizes", type=parse_batch_sizes, default=None,
                          help="act / encode batch sizes (default 1,8; quick 1,2)")
    attempts.add_argument("--sft-batch", type=int, default=None, help="LoRA SFT batch (default 8; quick 2; 0: skip)")
    attempts.add_argument("--sft-iters", type=int, default=None, help="timed SFT steps (default 20; quick 2)")
    attempts.add_argument("--sft-autocast", choices=("bf16", "none"), default=None,
                          help="SFT autocast (default bf16 on CUDA, none on the CPU)")
    attempts.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                          help="torch.compile mode of the 'compile' attempt")
    attempts.add_argument("--compile-backend", default=None,
                          help="torch.compile backend (default inductor; quick on the CPU: eager, i.e. dynamo "
                               "tracing only: inductor's code generation takes minutes on a small CPU)")
    attempts.add_argument("--time-budget-s", type=float, default=None,
                          help="start no phase after this many seconds (default 540 on CUDA: a device command "
                               "may run 600 s; 0 = none)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results_dir = Path(__file__).resolve().parent / "results"
    if any(value is not None for value in (args.device, args.preset, args.attempts)) or args.quick:
        args.device = args.device or "cpu"
        cuda = args.device == "cuda"
        args.preset = args.preset or "tiny"
        args.attempts = args.attempts or list(ATTEMPTS)
        if args.image_size is None:
            if args.preset == "tiny":
                args.image_size = 64
            else:
                from irevla.policy.presets import PRESETS

                args.image_size = PRESETS[args.preset][2]["image_size"] if args.preset in PRESETS else 224
        args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
        args.iters = args.iters or (3 if args.quick else 100)
        args.warmup = args.warmup or (1 if args.quick else 5)
        args.batch_sizes = args.batch_sizes or ([1, 2] if args.quick else [1, 8])
        args.sft_batch = args.sft_batch if args.sft_batch is not None else (2 if args.quick else 8)
        args.sft_iters = args.sft_iters or (2 if args.quick else 20)
        args.sft_autocast = args.sft_autocast or ("bf16" if cuda else "none")
        args.compile_backend = args.compile_backend or ("eager" if args.quick and not cuda else "inductor")
        args.time_budget_s = args.time_budget_s if args.time_budget_s is not None else (540.0 if cuda else 0.0)
        args.out = args.out or str(results_dir / ("policy_gpu.json" if cuda else "policy_latency_cpu.json"))
        return run_attempts(args)

    args.image_size = args.image_size or 64
    args.out = args.out or str(results_dir / "policy.json")
    results = [bench_kind(kind, args.image_size, args.repeats) for kind in args.kinds]
    report = {
        "benchmark": "policy_cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": args.threads},
        "parameters": {"image_size": args.image_size, "repeats": args.repeats, "sft_batch": 32, "encode_batch": 32,
                       "head_batch": 256},
        "results": results,
    }
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()

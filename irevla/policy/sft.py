"""Supervised fine-tuning (SFT) of the VLA on episode directories: stage 0 on D_e, stage 2 on D_e + D_RL.

Read top to bottom: `run_sft` loads the episodes, splits them by episode, builds (or loads, with ``init``) the
policy, then loops: sample a batch (uniform over all episodes, or with ``data.expert_fraction`` a weighted draw
mixing D_e and D_RL), augment its images (shift, colour jitter), predict actions in unit space (in
``grad_accumulation`` micro-batches), masked MSE / L1 / Huber against the normalised demo actions, AdamW step (backbone and head at their own learning rates, warmup + cosine). Every
``eval_every`` steps it measures the validation loss; every ``checkpoint_every`` steps it writes ``<out>/last``
(policy + optimizer state); at the end it writes the policy to ``<out>/policy``.

Run directory::

    <out>/config.yaml       the exact config (resuming checks the new one against it)
    <out>/metrics.jsonl     one JSON object per log line: {"step", "loss", "lr", ...} / {"step", "val_loss", ...}
    <out>/tensorboard/      the same scalars for TensorBoard (train.tensorboard; irevla.metrics_log)
    <out>/wandb/            with train.wandb.enabled: wandb's local files (the run also goes to wandb)
    <out>/last/             policy/ + trainer.json + optimizer.safetensors: what --resume continues from
    <out>/policy/           the trained policy (irevla.policy.checkpoint format)
    <out>/summary.json      steps, final losses, throughput, checkpoint id

Exact resumption: batch indices, augmentation and dropout are pure functions of (seed, step), and the optimizer
state is saved, so a run stopped at step k and resumed computes the same weights as one that never stopped.
Accelerate places the model (GPU when there is one), runs mixed precision and, under ``accelerate launch``, shards
every batch across processes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, default_collate

from irevla.atomic_io import atomic_write_bytes, new_temp_directory, replace_directory
from irevla.config import ConfigError, dump_config
from irevla.data.split import split_by_episode
from irevla.data.stats import compute_stats
from irevla.data.store import EpisodeCollection
from irevla.data.torch_dataset import EpisodeStepDataset
from irevla.errors import MissingFileError
from irevla.metrics_log import MetricsLog, check_wandb
from irevla.policy.checkpoint import load_policy, save_policy
from irevla.policy.config import RESUMABLE_KEYS, SFTConfig
from irevla.policy.errors import CheckpointError
from irevla.policy.images import color_jitter, random_shift
from irevla.policy.trainer_state import load_optimizer_state, optimizer_state_to_files
from irevla.policy.vla import VLAPolicy
from irevla.spec import ContractError

TRAINER_FILE = "trainer.json"
Log = Callable[[str], None]


@dataclass
class SFTResult:
    out: str
    policy_dir: str
    checkpoint_id: str
    steps: int
    train_loss: float | None
    val_loss: float | None
    seconds: float
    samples_per_second: float
    train_episodes: int
    val_episodes: int
    process_index: int = 0  # under `accelerate launch`: which process returned this (only 0 saves and reports)

    def format(self) -> str:
        val = f"{self.val_loss:.4f}" if self.val_loss is not None else "n/a"
        train = f"{self.train_loss:.4f}" if self.train_loss is not None else "n/a"
        return (f"SFT done: {self.steps} steps in {self.seconds:.0f} s ({self.samples_per_second:.0f} samples/s), "
                f"train loss {train}, val loss {val} ({self.train_episodes} train / "
                f"{self.val_episodes} val episodes)\npolicy: {self.policy_dir} ({self.checkpoint_id[:19]})")


# ------------------------------------------------------------------------------------------ deterministic pieces
def _mix(seed: int, *values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and processes)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, *values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def batch_indices(step: int, batch_size: int, n_samples: int, seed: int) -> list[int]:
    """The sample indices of `step`: consecutive slices of a stream of per-epoch permutations of the dataset."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_samples)
        indices.append(_epoch_permutation(seed, epoch, n_samples)[offset])
    return indices


_permutations: dict[tuple[int, int, int], list[int]] = {}


def _epoch_permutation(seed: int, epoch: int, n_samples: int) -> list[int]:
    key = (seed, epoch, n_samples)
    if key not in _permutations:
        if len(_permutations) > 4:
            _permutations.clear()
        generator = torch.Generator().manual_seed(_mix(seed, epoch, 1))
        _permutations[key] = torch.randperm(n_samples, generator=generator).tolist()
    return _permutations[key]


def sample_weights(is_expert: np.ndarray, expert_fraction: float) -> torch.Tensor:
    """Per-sample probabilities giving D_e (``is_expert``) `expert_fraction` of the mass, D_RL the rest, each
    uniform within itself."""
    is_expert = np.asarray(is_expert, dtype=bool)
    n_expert, n_rl = int(is_expert.sum()), int((~is_expert).sum())
    if not n_expert or not n_rl:
        raise ConfigError(f"data.expert_fraction: needs training samples from both D_e (the first dir) and D_RL "
                          f"(the others); found {n_expert} and {n_rl}")
    weights = np.where(is_expert, expert_fraction / n_expert, (1.0 - expert_fraction) / n_rl)
    return torch.from_numpy(weights.astype(np.float64))


def weighted_batch_indices(step: int, batch_size: int, weights: torch.Tensor, seed: int) -> list[int]:
    """The sample indices of `step` drawn with replacement by `weights` (a pure function of seed and step)."""
    generator = torch.Generator().manual_seed(_mix(seed, step, 4))
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator).tolist()


class StepBatches:
    """Batch sampler for a DataLoader: the index lists of steps ``start .. stop - 1`` (this process's shard).

    With `weights` (stage-2 mixing) every batch is a weighted draw with replacement; without, the batches walk
    through per-epoch permutations (every sample once per epoch, uniform over the union)."""

    def __init__(self, start: int, stop: int, batch_size: int, n_samples: int, seed: int, rank: int = 0,
                 world: int = 1, weights: torch.Tensor | None = None) -> None:
        self.start, self.stop, self.batch_size, self.n_samples = start, stop, batch_size, n_samples
        self.seed, self.rank, self.world, self.weights = seed, rank, world, weights

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            indices = (batch_indices(step, self.batch_size, self.n_samples, self.seed) if self.weights is None
                       else weighted_batch_indices(step, self.batch_size, self.weights, self.seed))
            yield indices[self.rank::self.world]


class ProcessRecord:
    """What one process of a multi-process (``accelerate launch``) run trained on, and the weights it ended with.

    Each process writes ``<out>/processes/rank-<k>.json``: the number of samples it trained on, a sha256 over their
    (episode, step) ids in order, the first 64 of them, and a sha256 of its final weights. After training every
    process compares the weight hashes: data parallelism must leave identical replicas, and a run whose processes
    disagree stops with an error instead of saving one of them."""

    FIRST = 64

    def __init__(self, rank: int, world: int) -> None:
        import hashlib

        self.rank, self.world = rank, world
        self.samples = 0
        self.first: list[list[int]] = []
        self._digest = hashlib.sha256()

    def saw(self, episodes: torch.Tensor, steps: torch.Tensor) -> None:
        ids = torch.stack([torch.as_tensor(episodes), torch.as_tensor(steps)], dim=1).long()
        self._digest.update(ids.numpy().astype("<i8").tobytes())
        self.samples += len(ids)
        self.first.extend(ids[:max(0, self.FIRST - len(self.first))].tolist())

    @staticmethod
    def weights_sha256(policy: VLAPolicy) -> str:
        """A hash of the weights that train (the frozen ones cannot diverge), over their bytes as stored, one tensor
        at a time (a full-training 3.7 B model is never copied whole)."""
        import hashlib

        digest = hashlib.sha256()
        for name, parameter in sorted(policy.named_parameters()):
            if parameter.requires_grad:
                digest.update(name.encode())
                digest.update(parameter.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
        return digest.hexdigest()

    def check_same_weights(self, out: Path, policy: VLAPolicy, gather_object: Callable[[list], list]) -> None:
        """Write this process's record, then compare every process's weight hash (`gather_object`: accelerate's,
        which works across machines without a shared file system)."""
        record = {"process_index": self.rank, "num_processes": self.world, "samples": self.samples,
                  "samples_sha256": self._digest.hexdigest(), "first_samples": self.first,
                  "weights_sha256": self.weights_sha256(policy)}
        directory = out / "processes"
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / f"rank-{self.rank}.json", json.dumps(record, indent=1).encode())
        hashes = gather_object([record["weights_sha256"]])
        if len(set(hashes)) != 1:
            raise RuntimeError(f"{directory}: the {self.world} processes ended with different weights "
                               f"({hashes}); data-parallel replicas must stay identical -- nothing was saved")


def learning_rate_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1, then constant or cosine decay to 0 at `steps`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (unpadded) steps of action chunks: (B, k, A), (B, k, A), (B, k)."""
    return masked_loss(predicted, target, mask, "mse")


def elementwise_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str, huber_delta: float = 1.0
                     ) -> torch.Tensor:
    if kind == "mse":
        return (predicted - target) ** 2
    if kind == "l1":
        return (predicted - target).abs()
    if kind == "huber":
        return torch.nn.functional.huber_loss(predicted, target, reduction="none", delta=huber_delta)
    raise ValueError(f"train.loss: expected 'mse', 'l1' or 'huber', got {kind!r}")


def masked_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "mse",
                huber_delta: float = 1.0, denominator: torch.Tensor | float | None = None) -> torch.Tensor:
    """`kind` loss (mse / l1 / huber) averaged over the real (unpadded) steps of action chunks (B, k, A).

    `denominator`: the number of real steps to divide by (default: this batch's); micro-batches of one batch pass
    the whole batch's count so that their gradients add up to the batch's."""
    weights = mask.to(predicted.dtype).unsqueeze(-1)
    count = weights.sum() if denominator is None else torch.as_tensor(denominator, dtype=predicted.dtype)
    return (elementwise_loss(predicted, target, kind, huber_delta) * weights).sum() / \
        (count * predicted.shape[-1]).clamp_min(1.0)


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class SFTData:
    train: EpisodeStepDataset
    val: EpisodeStepDataset | None
    train_episodes: list[str]
    val_episodes: list[str]


def load_episodes(config: SFTConfig) -> tuple[list, list]:
    """(train, val) episode infos from the configured directories, split by episode."""
    data = config.data
    infos = EpisodeCollection(list(data.dirs)).index(task=list(data.tasks) if data.tasks else None,
                                                     success=True if data.success_only else None)
    if not infos:
        raise ConfigError(f"data.dirs: no episodes in {list(data.dirs)} match tasks={data.tasks} "
                          f"success_only={data.success_only}")
    train, val = split_by_episode(infos, data.val_fraction, data.split_seed)
    return train, val


def make_datasets(config: SFTConfig, policy: VLAPolicy, train_infos: list, val_infos: list) -> SFTData:
    options = dict(action_chunk=policy.head.chunk, cameras=policy.cameras, cache=config.data.cache)
    try:
        train = EpisodeStepDataset(train_infos, **options)
        val = EpisodeStepDataset(val_infos, **options) if val_infos else None
    except ValueError as exc:
        raise ContractError(f"data.dirs: {exc}") from None
    for dataset in filter(None, (train, val)):
        for info in dataset.infos:
            if info.task.action_spec.names != policy.action_spec.names or \
                    info.task.observation_spec.proprio_names != policy.observation_spec.proprio_names:
                raise ContractError(f"{info.path}: actions {info.task.action_spec.names} / proprio "
                                    f"{info.task.observation_spec.proprio_names} differ from the policy's "
                                    f"{policy.action_spec.names} / {policy.observation_spec.proprio_names}")
    return SFTData(train, val, [i.path.name for i in train_infos], [i.path.name for i in val_infos])


# ------------------------------------------------------------------------------------------------------ policy
def make_policy(config: SFTConfig, train_infos: list) -> VLAPolicy:
    """A fresh policy sized by the data (stage 0), or the ``init`` checkpoint set up to train (stage 2)."""
    if config.init is not None:
        policy = load_policy(config.init)
        mode = config.policy.backbone_training
        if mode == "lora" and not policy.lora_layers:
            policy.add_lora(config.policy.lora)
        policy.set_backbone_training(mode)
        return policy
    stats = compute_stats(train_infos)
    task = train_infos[0].task
    return VLAPolicy.build(config.policy, task.action_spec, task.observation_spec, stats,
                           cameras=config.data.cameras, seed=config.train.seed)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def check_resumable(saved_config: Path, config: SFTConfig) -> None:
    """Only keys in RESUMABLE_KEYS may change between a run and its resumption (the rest change the result)."""
    try:
        old = _flatten(yaml.safe_load(saved_config.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{saved_config}: cannot read the run's config: {exc}") from None
    new = _flatten(config.model_dump(mode="json"))
    for key in sorted(set(old) | set(new)):
        if key not in RESUMABLE_KEYS and old.get(key) != new.get(key):
            raise ConfigError(f"{saved_config}: {key}: the run was started with {old.get(key)!r}, the config now "
                              f"says {new.get(key)!r}; resume with the same value or start a new run (other --out)")


# ------------------------------------------------------------------------------------------------- checkpoints
def group_names(policy: VLAPolicy) -> list[list[str]]:
    backbone = [f"backbone.{n}" for n, p in policy.backbone.named_parameters() if p.requires_grad]
    head = [f"head.{n}" for n, _ in policy.head.named_parameters()]
    return [backbone, head]


def write_last(out: Path, policy: VLAPolicy, optimizer: torch.optim.Optimizer, step: int, info: dict) -> None:
    """<out>/last: the policy and the optimizer state at `step`, replaced as one directory."""
    target = out / "last"
    temp = new_temp_directory(target)
    save_policy(policy, temp / "policy", info=info)
    trainer = {"format": "irevla-sft-trainer", "version": 1, "step": step,
               "optimizer": optimizer_state_to_files(optimizer, group_names(policy), temp)}
    (temp / TRAINER_FILE).write_text(json.dumps(trainer, indent=1))
    replace_directory(temp, target)


def read_last(out: Path) -> tuple[VLAPolicy, dict]:
    last = out / "last"
    trainer_path = last / TRAINER_FILE
    if not trainer_path.is_file():
        raise MissingFileError(f"{trainer_path}: nothing to resume (no checkpoint was written in {out})")
    try:
        trainer = json.loads(trainer_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{trainer_path}: not valid JSON: {exc}") from None
    if trainer.get("format") != "irevla-sft-trainer" or trainer.get("version") != 1:
        raise CheckpointError(f"{trainer_path}: field 'format'/'version': expected 'irevla-sft-trainer' version 1, "
                              f"got {trainer.get('format')!r} version {trainer.get('version')!r}")
    return load_policy(last / "policy"), trainer


# ------------------------------------------------------------------------------------------------------- train
def _augment(images: dict[str, torch.Tensor], train_config, step: int) -> dict[str, torch.Tensor]:
    """Random shift, then colour jitter (each off at 0); a pure function of (seed, step)."""
    generator = torch.Generator().manual_seed(_mix(train_config.seed, step, 2))
    out = {}
    for camera, frames in images.items():
        frames = random_shift(frames, train_config.shift_pixels, generator)
        out[camera] = color_jitter(frames, train_config.jitter_brightness, train_config.jitter_contrast,
                                   train_config.jitter_saturation, generator)
    return out


def expert_flags(dataset: EpisodeStepDataset, expert_dir: str) -> np.ndarray:
    """Per training sample: does it come from an episode under `expert_dir` (D_e)?"""
    root = Path(expert_dir).resolve()
    flags = [Path(info.path).resolve().is_relative_to(root) for info in dataset.infos]
    return np.repeat(np.asarray(flags, dtype=bool), [info.n_steps for info in dataset.infos])


@torch.no_grad()
def validation_loss(model, policy: VLAPolicy, dataset: EpisodeStepDataset, batch_size: int, batches: int,
                    device: torch.device, loss: str = "mse", huber_delta: float = 1.0) -> float:
    """Mean unit-space `loss` (mse / l1 / huber) over up to `batches` fixed batches spread evenly over the
    validation set."""
    count = min(len(dataset), batch_size * batches)
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    total, weight = 0.0, 0.0
    with policy.evaluating():
        for start in range(0, count, batch_size):
            batch = default_collate([dataset[i] for i in indices[start:start + batch_size]])
            images = {camera: frames.to(device) for camera, frames in batch["images"].items()}
            predicted = model(images, batch["instruction"], batch["proprio"].to(device))
            target = policy.normalizer.action_to_unit(batch["action"].to(device))
            mask = batch["action_mask"].to(device)
            total += float(masked_loss(predicted.float(), target, mask, loss, huber_delta)) * float(mask.sum())
            weight += float(mask.sum())
    return total / max(weight, 1.0)


def sft_step_backward(model, policy: VLAPolicy, accelerator, images: dict[str, torch.Tensor], batch: dict,
                      train_config, device: torch.device) -> torch.Tensor:
    """Forward + backward of one batch in ``grad_accumulation`` micro-batches; returns the batch's loss.

    Each micro-batch's loss is divided by the whole batch's number of real action steps, so the accumulated
    gradient equals the one-batch gradient (up to float rounding). Across processes, gradients are synchronised
    on the last micro-batch only."""
    import contextlib

    mask = batch["action_mask"].to(device)
    total_steps = mask.float().sum()
    n = len(batch["instruction"])
    parts = min(train_config.grad_accumulation, n)
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    loss_sum = torch.zeros((), device=device)
    for part, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if hi <= lo:
            continue
        sync = contextlib.nullcontext() if part == parts - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                predicted = model({c: f[lo:hi].to(device) for c, f in images.items()}, batch["instruction"][lo:hi],
                                  batch["proprio"][lo:hi].to(device))
            target = policy.normalizer.action_to_unit(batch["action"][lo:hi].to(device))
            loss = masked_loss(predicted.float(), target, mask[lo:hi], train_config.loss, train_config.huber_delta,
                               denominator=total_steps)
            if not torch.isfinite(loss):
                return loss
            accelerator.backward(loss)
        loss_sum = loss_sum + loss.detach()
    return loss_sum


def run_sft(config: SFTConfig, resume: bool = False, stop_after: int | None = None, log: Log | None = print,
            progress: Callable[[dict], None] | None = None) -> SFTResult:
    """Train per `config` (see the module docstring). `stop_after`: checkpoint and return after that step
    (a time-boxed job resumes later with ``resume=True``). `progress` (main process) gets ``{"step": steps done,
    "steps": train.steps, "loss": the latest logged training loss or None}`` after every step."""
    from accelerate import Accelerator

    say = log or (lambda message: None)
    train_config = config.train
    check_wandb(train_config.wandb)  # enabled but not installed: say so before anything loads
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    out = Path(config.out)
    if resume:
        check_resumable(out / "config.yaml", config)
    elif (out / "last").exists() or (out / "policy").exists():
        raise ConfigError(f"{out}: already holds an SFT run; pass --resume to continue it, or choose another out")

    accelerator = Accelerator(mixed_precision=train_config.mixed_precision, cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    if not main:
        say = lambda message: None  # noqa: E731 (one process speaks for a multi-process run)
    train_infos, val_infos = load_episodes(config)
    if resume:
        policy, trainer_state = read_last(out)
        start_step = int(trainer_state["step"])
    else:
        policy, trainer_state, start_step = make_policy(config, train_infos), None, 0
        if main:
            out.mkdir(parents=True, exist_ok=True)
            dump_config(config, out / "config.yaml")
    if train_config.gradient_checkpointing:
        policy.backbone.enable_gradient_checkpointing()
    data = make_datasets(config, policy, train_infos, val_infos)
    say(f"SFT: {len(data.train)} train samples ({len(data.train_episodes)} episodes), "
        f"{len(data.val) if data.val else 0} val samples ({len(data.val_episodes)} episodes); {policy.describe()}")

    backbone_params, head_params = policy.parameter_groups()
    groups = [{"params": backbone_params, "lr": train_config.lr, "base_lr": train_config.lr},
              {"params": head_params, "lr": train_config.head_lr, "base_lr": train_config.head_lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=train_config.weight_decay)
    if trainer_state is not None:
        load_optimizer_state(optimizer, group_names(policy), out / "last", trainer_state["optimizer"])
    model, optimizer = accelerator.prepare(policy, optimizer)
    device = accelerator.device

    stop = min(train_config.steps, stop_after) if stop_after is not None else train_config.steps
    weights = None
    if config.data.expert_fraction is not None:
        weights = sample_weights(expert_flags(data.train, config.data.dirs[0]), config.data.expert_fraction)
    batches = DataLoader(data.train, batch_sampler=StepBatches(start_step, stop, train_config.batch_size,
                                                               len(data.train), train_config.seed,
                                                               accelerator.process_index, accelerator.num_processes,
                                                               weights),
                         num_workers=config.data.num_workers, collate_fn=default_collate)
    # metrics.jsonl, <out>/tensorboard and (train.wandb) a wandb run; on resume, records past the checkpoint go
    metrics = MetricsLog(out, resume_step=start_step if resume else None, tensorboard=train_config.tensorboard,
                         wandb=train_config.wandb, run_name=out.name, job_type="stage2" if config.init else "sft",
                         config=config.model_dump(mode="json")) if main else None
    processes = ProcessRecord(accelerator.process_index, accelerator.num_processes) \
        if accelerator.num_processes > 1 else None
    info_base = {"stage": "sft", "data_dirs": list(config.data.dirs), "train_episodes": len(data.train_episodes),
                 "tasks": sorted({i.task.name for i in data.train.infos}),
                 "instructions": sorted({i.instruction for i in data.train.infos})}
    start_time = last_log_time = time.perf_counter()
    # loss_value: the mean training loss of the latest log window (what the summary and checkpoints report).
    samples_since_log, step, loss_value, val_loss = 0, start_step, float("nan"), None
    running_loss: list[float] = []
    model.train()
    for step_offset, batch in enumerate(batches):
        step = start_step + step_offset
        factor = learning_rate_factor(step, train_config.steps, train_config.warmup_steps, train_config.schedule)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        torch.manual_seed(_mix(train_config.seed, step, 3))  # dropout, if the backbone has any
        images = _augment(batch["images"], train_config, step)
        optimizer.zero_grad(set_to_none=True)
        loss = sft_step_backward(model, policy, accelerator, images, batch, train_config, device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SFT step {step}: the loss is {float(loss)} (lower train.lr / head_lr, or "
                                     f"try mixed_precision: 'no')")
        grad_norm = float(accelerator.clip_grad_norm_(list(policy.parameters()), train_config.grad_clip))
        optimizer.step()
        running_loss.append(float(loss.detach()))
        if processes is not None:
            processes.saw(batch["episode"], batch["step"])
        samples_since_log += len(batch["instruction"]) * accelerator.num_processes
        done = step + 1
        if main and (done % train_config.log_every == 0 or done == stop):
            now = time.perf_counter()
            record = {"step": done, "loss": float(np.mean(running_loss)), "lr": train_config.lr * factor,
                      "head_lr": train_config.head_lr * factor, "grad_norm": grad_norm,
                      "samples_per_s": samples_since_log / max(now - last_log_time, 1e-9),
                      "elapsed_s": now - start_time}
            metrics.write(record)
            loss_value = record["loss"]
            say(f"step {done}/{train_config.steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"grad {grad_norm:.2f}  {record['samples_per_s']:.0f} samples/s")
            running_loss, samples_since_log, last_log_time = [], 0, now
        if data.val is not None and (done % train_config.eval_every == 0 or done == train_config.steps):
            val_loss = validation_loss(model, policy, data.val, train_config.batch_size, train_config.val_batches,
                                       device, train_config.loss, train_config.huber_delta)
            model.train()
            if main:
                metrics.write({"step": done, "val_loss": val_loss})
                say(f"step {done}  val loss {val_loss:.4f}")
        if main and (done % train_config.checkpoint_every == 0 or done == stop):
            write_last(out, policy, optimizer, done,
                       {**info_base, "step": done, "train_loss": loss_value, "val_loss": val_loss})
        if main and progress is not None:
            progress({"step": done, "steps": train_config.steps,
                      "loss": loss_value if math.isfinite(loss_value) else None})
        accelerator.wait_for_everyone()
    elapsed = time.perf_counter() - start_time
    final_step = max(step + 1, start_step) if stop > start_step else start_step
    if processes is not None:
        from accelerate.utils import gather_object

        processes.check_same_weights(out, policy, gather_object)
    policy_dir = out / "policy"
    checkpoint_id = ""
    if main:
        if final_step >= train_config.steps:
            checkpoint_id = save_policy(policy, policy_dir, info={
                **info_base, "step": final_step, "train_loss": loss_value if math.isfinite(loss_value) else None,
                "val_loss": val_loss})
        metrics.close()
    result = SFTResult(out=str(out), policy_dir=str(policy_dir) if checkpoint_id else "", checkpoint_id=checkpoint_id,
                       steps=final_step, train_loss=loss_value if math.isfinite(loss_value) else None,
                       val_loss=val_loss, seconds=elapsed,
                       samples_per_second=(final_step - start_step) * train_config.batch_size / max(elapsed, 1e-9),
                       train_episodes=len(data.train_episodes), val_episodes=len(data.val_episodes),
                       process_index=accelerator.process_index)
    if main:
        (out / "summary.json").write_text(json.dumps(asdict(result), indent=1))
    for dataset in filter(None, (data.train, data.val)):
        dataset.close()
    if processes is not None:
        _end_process_group(accelerator)
    return result


def _end_process_group(accelerator) -> None:
    """Data-parallel runs: leave the process group together before the process exits. Left to the interpreter's exit,
    gloo's worker threads met the static destructors of a process that had not joined them: "terminate called without
    an active exception", SIGABRT in one rank, and a failed launch after a finished run (seen once in CI)."""
    import torch.distributed as dist

    accelerator.wait_for_everyone()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

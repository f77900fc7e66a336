"""`VLAPolicy`: backbone (VLM) + action head + normalisation, behind the contract types.

    latent  = policy.encode(images, instructions)             # TokenSequence (B, m, d): the VLM, run once
    unit    = policy.head(latent.tokens, latent.mask, policy.normalizer.proprio_to_unit(proprio))  # (B, chunk, A)
    actions = policy.normalizer.action_from_unit(unit)         # env units, clipped to the ActionSpec
    action  = policy.act(observation)                          # irevla.spec.Observation -> irevla.spec.Action

Stage 0/2 (SFT) trains ``forward`` (backbone via LoRA or fully, plus head) with MSE in unit space; stage 1 (RL)
freezes the backbone, stores ``encode`` outputs and trains only a head with the same structure, exchanged through
`head_state` / `load_head_state` (plain tensors with documented names, see docs/policy.md).

`act` never returns NaN/inf (it raises instead) and always clips to the ActionSpec.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from irevla.data.stats import DatasetStats
from irevla.policy.backbones import BackboneAdapter, TokenSequence, build_backbone
from irevla.policy.config import BackboneTraining, LoraSettings, PolicyConfig
from irevla.policy.head import ActionHead
from irevla.policy.lora import add_lora, has_lora, lora_patterns, merge_lora, set_backbone_training
from irevla.policy.normalization import Normalizer
from irevla.spec import Action, ActionSpec, ContractError, Observation, ObservationSpec


class VLAPolicy(nn.Module):
    """See the module docstring. Build with `VLAPolicy.build`, load with `irevla.policy.checkpoint.load_policy`."""

    def __init__(self, config: PolicyConfig, backbone: BackboneAdapter, action_spec: ActionSpec,
                 observation_spec: ObservationSpec, stats: DatasetStats, cameras: Sequence[str] | None = None
                 ) -> None:
        super().__init__()
        cameras = tuple(cameras) if cameras is not None else tuple(observation_spec.cameras)
        unknown = [c for c in cameras if c not in observation_spec.cameras]
        if not cameras or unknown:
            raise ContractError(f"VLAPolicy.cameras: {list(cameras)} must be a non-empty subset of the observation "
                                f"spec's cameras {list(observation_spec.cameras)}")
        if stats.proprio.names != observation_spec.proprio_names:
            raise ContractError(f"VLAPolicy: statistics are for proprio {stats.proprio.names}, the observation spec "
                                f"has {observation_spec.proprio_names}")
        self.config = config
        self.backbone = backbone
        self.action_spec = action_spec
        self.observation_spec = observation_spec
        self.cameras = cameras
        self.normalizer = Normalizer(action_spec, stats, config.action_normalization)
        self.head = ActionHead(config.head, backbone.hidden_size, len(observation_spec.proprio_names),
                               action_spec.dim)
        self.lora_layers: list[str] = []  # module names (inside backbone.model) carrying LoRA adapters
        self.lora_settings: LoraSettings | None = None
        # True once the backbone's own weights differ from config.backbone.pretrained (full training, merged LoRA):
        # a checkpoint must then store them instead of referring to the pretrained directory.
        self.base_weights_modified = config.backbone.pretrained is None
        self.checkpoint_id: str | None = None  # set by save_policy / load_policy

    # --------------------------------------------------------------------------------------------- construction
    @classmethod
    def build(cls, config: PolicyConfig, action_spec: ActionSpec, observation_spec: ObservationSpec,
              stats: DatasetStats, cameras: Sequence[str] | None = None, seed: int | None = 0) -> VLAPolicy:
        """A new policy: backbone per ``config.backbone`` (random or pretrained), fresh head, LoRA if configured."""
        with _seeded(seed):
            backbone = build_backbone(config.backbone)
            policy = cls(config, backbone, action_spec, observation_spec, stats, cameras)
            if config.backbone_training == "lora":
                policy.add_lora(config.lora)
        policy.set_backbone_training(config.backbone_training)
        return policy

    @property
    def stats(self) -> DatasetStats:
        return self.normalizer.stats

    @property
    def device(self) -> torch.device:
        return self.head.mlp.out.weight.device

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(m, d) of the latents `encode` produces."""
        return self.backbone.latent_length(len(self.cameras)), self.backbone.hidden_size

    # ------------------------------------------------------------------------------------------ LoRA, freezing
    def add_lora(self, settings: LoraSettings | None = None, layers: Sequence[str] | None = None) -> list[str]:
        """Inject LoRA (default: ``config.lora``) into the backbone; `layers` = exact module names (checkpoints)."""
        if has_lora(self.backbone.model):
            raise ValueError("the backbone already has LoRA layers (merge_lora() first to start a fresh adapter)")
        settings = settings or self.config.lora
        patterns = ([re.escape(name) for name in layers] if layers is not None
                    else lora_patterns(settings, self.backbone.lora_target_patterns))
        self.lora_layers = add_lora(self.backbone.model, settings, patterns)
        self.lora_settings = settings
        self.backbone.model.to(self.device)  # new adapter weights join the backbone's device
        return self.lora_layers

    def apply_lora(self, rank: int = 8, alpha: float = 16.0, targets: str | Sequence[str] = "language",
                   dropout: float = 0.0) -> list[str]:
        """LoRA of `rank` / `alpha` on `targets` (``language``, ``all`` or module-name patterns), then only the
        adapters train in the backbone. The RL learner's name for `add_lora`; returns the adapted layer names."""
        targets = targets if isinstance(targets, str) else tuple(targets)
        layers = self.add_lora(LoraSettings(r=rank, alpha=alpha, dropout=dropout, targets=targets))
        self.set_backbone_training("lora")
        return layers

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The LoRA adapter tensors of the backbone (names inside ``backbone.model``), CPU copies."""
        return {name: tensor.detach().cpu().contiguous().clone()
                for name, tensor in self.backbone.model.state_dict().items() if ".lora_" in name}

    def save_lora(self, directory) -> None:
        """Write the adapters alone: ``adapter.safetensors`` + ``adapter.json`` (settings, layers, sha256)."""
        import hashlib
        import json
        from pathlib import Path

        from safetensors.torch import save as save_tensors_to_bytes

        from irevla.atomic_io import atomic_write_bytes

        if not self.lora_layers:
            raise ValueError("save_lora: the backbone has no LoRA adapters")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = save_tensors_to_bytes(self.lora_state(), metadata={"format": "irevla-lora"})
        atomic_write_bytes(directory / "adapter.safetensors", payload)
        manifest = {"format": "irevla-lora", "version": 1, "settings": self.lora_settings.model_dump(mode="json"),
                    "layers": list(self.lora_layers), "backbone_kind": self.config.backbone.kind,
                    "sha256": "sha256:" + hashlib.sha256(payload).hexdigest()}
        atomic_write_bytes(directory / "adapter.json", json.dumps(manifest, indent=1, sort_keys=True).encode())

    def load_lora(self, directory) -> list[str]:
        """Load adapters written by `save_lora` into this policy's backbone (adding the layers if it has none);
        errors (`CheckpointError`) name the file and the mismatch. Returns the adapted layer names."""
        import hashlib
        import json
        from pathlib import Path

        from safetensors.torch import load as load_tensors_from_bytes

        from irevla.policy.errors import CheckpointError

        directory = Path(directory)
        manifest_path, weights_path = directory / "adapter.json", directory / "adapter.safetensors"
        for path in (manifest_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"{path}: missing (a LoRA adapter directory needs adapter.json and "
                                      f"adapter.safetensors)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{manifest_path}: not valid JSON: {exc}") from None
        if manifest.get("format") != "irevla-lora" or manifest.get("version") != 1:
            raise CheckpointError(f"{manifest_path}: field 'format'/'version': expected 'irevla-lora' version 1")
        payload = weights_path.read_bytes()
        if "sha256:" + hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
            raise CheckpointError(f"{weights_path}: content hash differs from adapter.json (corrupt or modified)")
        tensors = load_tensors_from_bytes(payload)
        layers = list(manifest["layers"])
        if not self.lora_layers:
            self.add_lora(LoraSettings.model_validate(manifest["settings"]), layers=layers)
        elif sorted(self.lora_layers) != sorted(layers):
            raise CheckpointError(f"{manifest_path}: field 'layers': the adapters are for {layers[:3]}..., this "
                                  f"policy's LoRA layers are {self.lora_layers[:3]}...")
        expected = {n: t for n, t in self.backbone.model.state_dict().items() if ".lora_" in n}
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{weights_path}: tensors do not match the model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise CheckpointError(f"{weights_path}: tensor {name!r}: expected shape "
                                      f"{tuple(expected[name].shape)}, got {tuple(tensor.shape)}")
        self.backbone.model.load_state_dict(tensors, strict=False)
        return self.lora_layers

    def merge_lora(self) -> int:
        """Fold LoRA into the backbone weights (same outputs, plain weights); returns the number of merged layers."""
        merged = merge_lora(self.backbone.model)
        if merged:
            self.lora_layers, self.lora_settings = [], None
            self.base_weights_modified = True
        return merged

    def set_backbone_training(self, mode: BackboneTraining) -> int:
        """``lora`` / ``full`` / ``frozen``; the head always trains. Returns trainable backbone parameters."""
        if mode == "full":
            self.base_weights_modified = True
        return set_backbone_training(self.backbone.model, mode)

    def freeze_backbone(self) -> None:
        """Stage 1: only the head trains; latents from `encode` never go stale."""
        self.set_backbone_training("frozen")

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(trainable backbone parameters, head parameters) -- the optimiser gives them different learning rates."""
        return ([p for p in self.backbone.parameters() if p.requires_grad], list(self.head.parameters()))

    # ----------------------------------------------------------------------------------------------- forward
    def camera_images(self, images: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ContractError(f"images: the policy needs cameras {list(self.cameras)}, missing {missing} "
                                f"(got {sorted(images)})")
        return [images[camera] for camera in self.cameras]

    def encode(self, images: Mapping[str, torch.Tensor], instructions: Sequence[str]) -> TokenSequence:
        """uint8 (B, H, W, 3) per camera + B instructions -> latent TokenSequence (B, m, d)."""
        return self.backbone.encode(self.camera_images(images), list(instructions))

    def forward(self, images: Mapping[str, torch.Tensor], instructions: Sequence[str],
                proprio: torch.Tensor) -> torch.Tensor:
        """Actions in unit space (B, chunk, A), values in [-1, 1]."""
        latent = self.encode(images, instructions)
        proprio_unit = self.normalizer.proprio_to_unit(proprio.to(latent.tokens.device))
        # The head stays float32 when the backbone runs in bf16/fp16 (RL trains it on its own, in float32).
        return self.head(latent.tokens.to(self.head.mlp.out.weight.dtype), latent.mask, proprio_unit)

    def head_actions(self, latent: TokenSequence, proprio: torch.Tensor) -> torch.Tensor:
        """Env-unit actions (B, chunk, A) from stored latents and raw proprio (stage-1 rollouts, evaluation)."""
        latent = latent.to(self.device)
        unit = self.head(latent.tokens.to(self.head.mlp.out.weight.dtype), latent.mask,
                         self.normalizer.proprio_to_unit(proprio.to(self.device)))
        return self.normalizer.action_from_unit(unit)

    @torch.inference_mode()
    def predict(self, images: Mapping[str, torch.Tensor], instructions: Sequence[str],
                proprio: torch.Tensor) -> torch.Tensor:
        """Env-unit actions (B, chunk, A), clipped to the ActionSpec; eval mode, inference mode (no autograd
        bookkeeping at all: the frozen path of `act`)."""
        with self.evaluating():
            images = {camera: tensor.to(self.device) for camera, tensor in images.items()}
            return self.normalizer.action_from_unit(self.forward(images, instructions, proprio.to(self.device)))

    def compile(self, mode: str | None = None, backend: str = "inductor", dynamic: bool = False) -> list[str]:
        """`torch.compile` the inference path in place: the backbone modules `encode` spends its time in
        (`BackboneAdapter.compile_targets`: BLIP-2's three models whole, the other families' blocks one by one) and
        the head. ``dynamic=False`` specialises on shapes, which are fixed
        per batch size (latents have a fixed length): the first call of each batch size compiles, later calls
        replay. Weights and state-dict names are unchanged. Returns the compiled modules' names.

        ``mode="reduce-overhead"`` adds CUDA graphs on a GPU; ``backend="eager"`` only traces (a CPU check that the
        path compiles without graph breaks in the wrong places, without generating code)."""
        targets = {**self.backbone.compile_targets(), "head": self.head}
        for module in targets.values():
            module.compile(mode=mode, backend=backend, dynamic=dynamic)
        return list(targets)

    # ---------------------------------------------------------------------------------------------- contract
    def observations_to_batch(self, observations: Sequence[Observation]
                              ) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor]:
        """Contract observations -> (images, instructions, proprio) tensors; checks cameras and proprio size."""
        if not observations:
            raise ContractError("observations: expected at least one Observation")
        images: dict[str, list[np.ndarray]] = {camera: [] for camera in self.cameras}
        proprio_dim = len(self.observation_spec.proprio_names)
        for index, observation in enumerate(observations):
            if not isinstance(observation, Observation):
                raise ContractError(f"observations[{index}]: expected irevla.spec.Observation, got "
                                    f"{type(observation).__name__}")
            for camera in self.cameras:
                if camera not in observation.images:
                    raise ContractError(f"Observation.images: the policy needs camera {camera!r}, got "
                                        f"{sorted(observation.images)}")
                images[camera].append(observation.images[camera])
            if observation.proprio.shape[0] != proprio_dim:
                raise ContractError(f"Observation.proprio: expected {proprio_dim} values "
                                    f"{self.observation_spec.proprio_names}, got {observation.proprio.shape[0]}")
        stacked = {}
        for camera, frames in images.items():
            if len({frame.shape for frame in frames}) > 1:
                raise ContractError(f"Observation.images[{camera!r}]: sizes differ within one batch "
                                    f"{sorted({frame.shape for frame in frames})}")
            stacked[camera] = torch.from_numpy(np.stack(frames))
        proprio = torch.from_numpy(np.stack([o.proprio for o in observations]).astype(np.float32))
        return stacked, [o.instruction for o in observations], proprio

    def act_batch(self, observations: Sequence[Observation]) -> list[Action]:
        """One `Action` per observation (the first of each predicted chunk): finite, within the ActionSpec."""
        images, instructions, proprio = self.observations_to_batch(observations)
        actions = self.predict(images, instructions, proprio)[:, 0].float().cpu().numpy()
        bad = ~np.isfinite(actions)
        if bad.any():
            rows, dims = np.nonzero(bad)
            raise ContractError(f"VLAPolicy.act: the network produced non-finite actions (observation {int(rows[0])}, "
                                f"dimension {self.action_spec.names[int(dims[0])]!r}); refusing to return them")
        return [Action(self.action_spec.clip(row), self.action_spec) for row in actions]

    def act(self, observation: Observation) -> Action:
        """The contract entry point: one observation -> one clipped, finite `Action`."""
        return self.act_batch([observation])[0]

    # ----------------------------------------------------------------------------------------------- the head
    def head_state(self) -> dict[str, torch.Tensor]:
        """The head's parameters as float32 CPU tensors with documented names (what RL trains and hands back)."""
        return {name: tensor.detach().to("cpu", torch.float32).clone()
                for name, tensor in self.head.state_dict().items()}

    def load_head_state(self, state: Mapping[str, torch.Tensor], where: str = "head state") -> None:
        """Replace the head's parameters; every name and shape must match (errors name `where` and the tensor)."""
        expected = self.head.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ContractError(f"{where}: head tensors do not match this policy: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")
        for name, tensor in expected.items():
            if tuple(state[name].shape) != tuple(tensor.shape):
                raise ContractError(f"{where}: tensor {name!r}: expected shape {tuple(tensor.shape)}, got "
                                    f"{tuple(state[name].shape)}")
            if not torch.isfinite(state[name]).all():
                raise ContractError(f"{where}: tensor {name!r} contains NaN/inf")
        self.head.load_state_dict({name: state[name].to(tensor.dtype) for name, tensor in expected.items()})

    # -------------------------------------------------------------------------------------------------- utils
    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for the duration, then the previous mode."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def parameter_counts(self) -> dict[str, int]:
        backbone_trainable, head = self.parameter_groups()
        return {"backbone": sum(p.numel() for p in self.backbone.parameters()),
                "backbone_trainable": sum(p.numel() for p in backbone_trainable),
                "head": sum(p.numel() for p in head)}

    def describe(self) -> str:
        counts = self.parameter_counts()
        m, d = self.latent_shape
        lora = f"LoRA r={self.lora_settings.r} on {len(self.lora_layers)} layers" if self.lora_layers else "no LoRA"
        return (f"{self.config.backbone.kind} backbone ({counts['backbone'] / 1e6:.2f} M params, "
                f"{counts['backbone_trainable'] / 1e6:.3f} M trainable, {lora}), head {counts['head'] / 1e6:.3f} M, "
                f"latent {m}x{d}, cameras {list(self.cameras)}, actions {list(self.action_spec.names)}")


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Deterministic initial weights for a given seed, without disturbing the caller's global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

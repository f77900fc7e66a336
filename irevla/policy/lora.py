"""LoRA on a backbone (peft) and what of the backbone trains: ``lora``, ``full`` or ``frozen``.

LoRA layers are injected in place (`peft.inject_adapter_in_model`), so the backbone keeps its module tree and its
transformers methods; adapted linear layers gain ``base_layer`` / ``lora_A`` / ``lora_B`` children. `merge_lora`
folds ``(alpha / r) B A`` into each base weight and puts the plain linear layer back: the same function, no adapter
overhead at inference, and a state dict with the original names.
"""

from __future__ import annotations

import re

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from irevla.policy.config import BackboneTraining, LoraSettings

ADAPTER = "default"


def lora_patterns(settings: LoraSettings, default_patterns) -> list[str]:
    """Explicit patterns from the settings, or the backbone's ``language`` / ``all`` defaults."""
    if isinstance(settings.targets, str):
        return list(default_patterns(settings.targets))
    return list(settings.targets)


def add_lora(model: nn.Module, settings: LoraSettings, patterns: list[str]) -> list[str]:
    """Inject LoRA into the linear layers of `model` whose names fully match one of `patterns`; returns their names
    (a checkpoint records them, so loading re-creates exactly these adapters)."""
    combined = "|".join(f"(?:{p})" for p in patterns)
    matched = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and re.fullmatch(combined, name)]
    if not matched:
        raise ValueError(f"lora.targets: no linear layer matches {patterns}; module names look like "
                         f"{[n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:5]}")
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=matched, bias="none")
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, parameter in model.named_parameters():  # adapters in float32 even on a bf16 backbone, as peft's own
        if ".lora_" in name and parameter.is_floating_point():  # default: small updates survive, AdamW state too
            parameter.data = parameter.data.float()
    return matched


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(module, LoraLayer) for module in model.modules())


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base weight and remove the adapters; returns how many layers were merged."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)  # safe_merge: checks the merged weights are finite before replacing
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    if hasattr(model, "peft_config"):
        del model.peft_config
    return merged


def set_backbone_training(model: nn.Module, mode: BackboneTraining) -> int:
    """Set requires_grad on the backbone's parameters for `mode`; returns the number of trainable parameters.

    ``full`` trains every weight the latent depends on: an untied vocabulary projection (``lm_head``) stays frozen,
    because the action head replaces it and `encode` never runs it -- a trainable weight without a gradient would
    stop data-parallel training (DDP) on its second step, and costs AdamW state for nothing."""
    if mode == "lora" and not has_lora(model):
        raise ValueError("backbone_training 'lora' needs LoRA layers: add them first (VLAPolicy.add_lora)")
    for name, parameter in model.named_parameters():
        if mode == "full":
            parameter.requires_grad_(True)
        elif mode == "frozen":
            parameter.requires_grad_(False)
        elif mode == "lora":
            parameter.requires_grad_(".lora_" in name)
        else:
            raise ValueError(f"backbone_training: expected 'lora', 'full' or 'frozen', got {mode!r}")
    if mode == "full":
        for parameter in unused_output_parameters(model):
            parameter.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unused_output_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The vocabulary projection's parameters when they are not shared with the input embeddings."""
    get_output, get_input = getattr(model, "get_output_embeddings", None), getattr(model, "get_input_embeddings", None)
    if get_output is None or get_input is None or get_output() is None:
        return []
    shared = {id(p) for p in get_input().parameters()}
    return [p for p in get_output().parameters() if id(p) not in shared]

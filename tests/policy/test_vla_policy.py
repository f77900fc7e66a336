"""VLAPolicy: encode / head / act on the contract types; freezing, LoRA, merging; the head's state."""

import numpy as np
import pytest
import torch
from policy_factory import IMAGE, tiny_policy

from irevla.policy.backbones import KINDS, TokenSequence
from irevla.policy.config import LoraSettings
from irevla.spec import Action, ContractError, Observation


def _observation(seed=0, instruction="push left", cameras=("front",), size=IMAGE, proprio=4):
    rng = np.random.default_rng(seed)
    return Observation(images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cameras},
                       proprio=rng.uniform(-1, 1, proprio).astype(np.float32), instruction=instruction)


@pytest.fixture(scope="module", params=KINDS)
def policy(request):
    return tiny_policy(request.param)


def test_act_returns_a_clipped_finite_contract_action(policy):
    with torch.no_grad():
        policy.head.mlp.out.bias.fill_(50.0)  # saturate: the action must still be within the spec
    try:
        action = policy.act(_observation())
    finally:
        with torch.no_grad():
            policy.head.mlp.out.bias.zero_()
    assert isinstance(action, Action) and action.values.dtype == np.float32
    assert policy.action_spec.contains(action.values)
    np.testing.assert_allclose(action.values, policy.action_spec.high, atol=1e-6)


def test_act_accepts_other_image_sizes_and_batches_consistently(policy):
    observations = [_observation(seed) for seed in range(3)]
    batch = policy.act_batch(observations)
    single = policy.act(observations[1])
    np.testing.assert_allclose(batch[1].values, single.values, atol=1e-5)
    assert policy.action_spec.contains(policy.act(_observation(size=48)).values)


def test_act_never_returns_nan(policy):
    saved = policy.head.mlp.out.weight.detach().clone()
    with torch.no_grad():
        policy.head.mlp.out.weight.fill_(float("nan"))
    try:
        with pytest.raises(ContractError, match="non-finite actions"):
            policy.act(_observation())
    finally:
        with torch.no_grad():
            policy.head.mlp.out.weight.copy_(saved)


def test_act_checks_cameras_and_proprio(policy):
    with pytest.raises(ContractError, match="needs camera 'front'"):
        policy.act(_observation(cameras=("wrist",)))
    with pytest.raises(ContractError, match="Observation.proprio: expected 4 values"):
        policy.act(_observation(proprio=7))
    with pytest.raises(ContractError, match="expected irevla.spec.Observation"):
        policy.act_batch([{"images": {}}])


def test_encode_then_head_equals_forward(policy):
    images = {"front": torch.randint(0, 256, (2, IMAGE, IMAGE, 3), dtype=torch.uint8)}
    proprio = torch.randn(2, 4)
    with torch.no_grad(), policy.evaluating():
        latent = policy.encode(images, ["push left", "push right"])
        assert isinstance(latent, TokenSequence) and latent.tokens.shape[1:] == policy.latent_shape
        stored = latent.to(dtype=torch.float16).to(dtype=torch.float32)  # what an fp16 replay buffer gives back
        from_latent = policy.head_actions(latent, proprio)
        from_stored = policy.head_actions(stored, proprio)
        direct = policy.predict(images, ["push left", "push right"], proprio)
    torch.testing.assert_close(from_latent, direct)
    torch.testing.assert_close(from_stored, direct, atol=2e-3, rtol=0)


def _trainable(module):
    return {name for name, p in module.named_parameters() if p.requires_grad}


def test_training_modes_select_what_trains():
    policy = tiny_policy("blip2", training="lora")
    lora = _trainable(policy.backbone)
    assert lora and all(".lora_" in name for name in lora)
    assert any("language_model" in name for name in lora) and not any("vision_model" in name for name in lora)
    assert _trainable(policy.head) == {name for name, _ in policy.head.named_parameters()}
    policy.freeze_backbone()
    assert not _trainable(policy.backbone)
    assert policy.parameter_counts()["backbone_trainable"] == 0
    policy.set_backbone_training("full")
    assert _trainable(policy.backbone) == {name for name, _ in policy.backbone.named_parameters()}
    full = tiny_policy("blip2", training="full")
    assert not full.lora_layers and _trainable(full.backbone)
    with pytest.raises(ValueError, match="needs LoRA layers"):
        full.set_backbone_training("lora")


def test_lora_on_all_layers_reaches_the_vision_encoder():
    policy = tiny_policy("qwen2_vl", training="frozen")
    policy.add_lora(LoraSettings(r=2, targets="all"))
    policy.set_backbone_training("lora")
    assert any("visual" in name for name in _trainable(policy.backbone))
    with pytest.raises(ValueError, match="already has LoRA"):
        policy.add_lora()
    with pytest.raises(ValueError, match="no linear layer matches"):
        tiny_policy("blip2", training="frozen").add_lora(LoraSettings(targets=("nothing_here",)))


@pytest.mark.parametrize("kind", KINDS)
def test_merging_lora_keeps_the_function_and_removes_the_adapters(kind):
    policy = tiny_policy(kind, training="lora")
    with torch.no_grad():
        for name, parameter in policy.backbone.named_parameters():
            if "lora_B" in name:  # B starts at zero (LoRA is a no-op at first); make the adapters matter
                parameter.normal_(0, 0.2)
    images = {"front": torch.randint(0, 256, (2, IMAGE, IMAGE, 3), dtype=torch.uint8)}
    proprio = torch.randn(2, 4)
    before = policy.predict(images, ["push left", "push right"], proprio)
    base_policy = tiny_policy(kind, training="frozen")
    assert not torch.allclose(before, base_policy.predict(images, ["push left", "push right"], proprio), atol=1e-4)
    n_layers = len(policy.lora_layers)
    assert policy.merge_lora() == n_layers > 0
    assert not policy.lora_layers and not any("lora" in name for name in policy.backbone.state_dict())
    torch.testing.assert_close(policy.predict(images, ["push left", "push right"], proprio), before,
                               atol=1e-5, rtol=1e-4)
    assert set(policy.backbone.state_dict()) == set(base_policy.backbone.state_dict())


def test_head_state_round_trips_and_rejects_mismatches():
    policy, other = tiny_policy(seed=0), tiny_policy(seed=0)
    with torch.no_grad():
        for parameter in other.head.parameters():
            parameter.normal_()
    observation = _observation()
    assert not np.allclose(other.act(observation).values, policy.act(observation).values)
    other.load_head_state(policy.head_state())
    assert set(policy.head_state()) == set(policy.head.state_dict())
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in policy.head_state().values())
    state = policy.head_state()
    state["mlp.out.weight"] = torch.zeros(3, 3)
    with pytest.raises(ContractError, match=r"'mlp.out.weight': expected shape \(4, 64\), got \(3, 3\)"):
        other.load_head_state(state)
    state = policy.head_state()
    del state["mlp.out.bias"]
    with pytest.raises(ContractError, match="missing \\['mlp.out.bias'\\]"):
        other.load_head_state(state, where="from learner")
    state = policy.head_state()
    state["mlp.out.bias"][0] = float("inf")
    with pytest.raises(ContractError, match="NaN/inf"):
        other.load_head_state(state)
    # Same backbone (same seed) + the loaded head = the same actions.
    np.testing.assert_allclose(other.act(observation).values, policy.act(observation).values, atol=1e-6)


def test_action_chunks_come_out_of_predict_and_act_returns_the_first():
    policy = tiny_policy(action_chunk=4)
    images = {"front": torch.randint(0, 256, (1, IMAGE, IMAGE, 3), dtype=torch.uint8)}
    chunk = policy.predict(images, ["push left"], torch.zeros(1, 4))
    assert chunk.shape == (1, 4, 4)
    observation = Observation(images={"front": images["front"][0].numpy()}, proprio=np.zeros(4, np.float32),
                              instruction="push left")
    np.testing.assert_allclose(policy.act(observation).values, chunk[0, 0].numpy(), atol=1e-6)

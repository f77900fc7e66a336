"""The Flax head equals the torch head on the same parameters (DESIGN: one boundary, a parity test proves it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("jax")
pytest.importorskip("flax")

from policy_factory import tiny_policy  # noqa: E402

from irevla.learner.flax_head import FlaxHead, HeadSpec, params_from_state, state_from_params  # noqa: E402


def _torch_inputs(policy, batch=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    m, d = policy.latent_shape
    tokens = torch.randn(batch, m, d, generator=generator)
    mask = torch.ones(batch, m, dtype=torch.bool)
    mask[1, m // 2:] = False  # padding
    mask[2, :] = False  # no real token at all: pools to the queries, never NaN
    proprio = torch.randn(batch, policy.head.proprio_dim, generator=generator)
    return tokens, mask, proprio


@pytest.mark.parametrize("pool_queries, layer_norm", [(1, True), (2, False)])
def test_flax_head_matches_torch_head(pool_queries, layer_norm):
    policy = tiny_policy(pool_queries=pool_queries, layer_norm=layer_norm)
    spec = HeadSpec.from_policy(policy)
    tokens, mask, proprio = _torch_inputs(policy)
    with torch.no_grad():
        # Perturb every parameter so biases/LayerNorm scales are not at their (easy) initial values.
        for parameter in policy.head.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        proprio_unit = policy.normalizer.proprio_to_unit(proprio)
        expected = policy.head(tokens, mask, proprio_unit)[:, 0].numpy()
    params = params_from_state(policy.head_state())
    head = FlaxHead(spec, output_dim=spec.action_dim)
    mu = head.apply({"params": params}, tokens.numpy(), mask.numpy(), spec.proprio_to_unit(proprio.numpy()))
    np.testing.assert_allclose(np.tanh(np.asarray(mu)), expected, atol=1e-5, rtol=0)
    assert np.isfinite(np.asarray(mu)).all()


def test_names_round_trip_both_ways():
    policy = tiny_policy()
    state = {name: tensor.numpy() for name, tensor in policy.head_state().items()}
    back = state_from_params(params_from_state(state))
    assert sorted(back) == sorted(state)
    for name in state:
        np.testing.assert_array_equal(back[name], state[name])
    # ... and the torch policy accepts what came back from JAX.
    policy.load_head_state({name: torch.from_numpy(array) for name, array in back.items()})


def test_pooled_mode_uses_only_the_mlp():
    policy = tiny_policy()
    spec = HeadSpec.from_policy(policy, latent="pooled")
    tokens, mask, proprio = _torch_inputs(policy)
    with torch.no_grad():
        pooled = policy.head.token_learner(tokens, mask)
        expected = policy.head(tokens, mask, policy.normalizer.proprio_to_unit(proprio))[:, 0].numpy()
    params = params_from_state(policy.head_state(), prefix="mlp.")
    assert set(params) == {"mlp"}
    mu = FlaxHead(spec, output_dim=spec.action_dim).apply({"params": params}, pooled.numpy(), None,
                                                          spec.proprio_to_unit(proprio.numpy()))
    np.testing.assert_allclose(np.tanh(np.asarray(mu)), expected, atol=1e-5, rtol=0)


def test_head_spec_round_trips_through_json():
    import json

    spec = HeadSpec.from_policy(tiny_policy())
    assert HeadSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown fields"):
        HeadSpec.from_dict({**spec.to_dict(), "bogus": 1})

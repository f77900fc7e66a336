"""The Flax head equals the torch head on the same parameters (DESIGN: one boundary, a parity test proves it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("jax")
pytest.importorskip("flax")

from policy_factory import tiny_policy  # noqa: E402

from irevla.learner.flax_head import (  # noqa: E402
    CriticEnsemble,
    FlaxHead,
    HeadSpec,
    critic_head_params,
    params_from_state,
    state_from_params,
)


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


def _perturbed_critics(spec, token_learner, tokens, mask, proprio_unit, action, count=3):
    """A `CriticEnsemble`'s parameters, every leaf moved off its initial value (so no bias or scale is trivial)."""
    import jax

    ensemble = CriticEnsemble(spec, count, shared_token_learner=token_learner == "shared")
    params = ensemble.init(jax.random.PRNGKey(0), tokens, mask, proprio_unit, action)["params"]
    # Independent initialisations: every critic's MLP (and per critic, its token learner) starts elsewhere.
    first_layer = np.asarray(params["mlp"]["linear0"]["kernel"])
    assert not np.allclose(first_layer[0], first_layer[1])
    if token_learner == "per_critic":
        queries = np.asarray(params["token_learner"]["queries"])
        assert not np.allclose(queries[0], queries[1])
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda leaf: leaf + 0.05 * rng.normal(size=leaf.shape).astype(np.float32), params)
    return ensemble, params


@pytest.mark.parametrize("token_learner", ["shared", "per_critic"])
def test_each_critic_of_the_ensemble_is_the_torch_critic_head(token_learner):
    """Critic i of the JAX ensemble, read out with torch names (`critic_head_params` + `state_from_params`), loads
    into the torch head's `critic_like()` and computes the same Q -- in both layouts of the critic token learner."""
    policy = tiny_policy(pool_queries=2)
    spec = HeadSpec.from_policy(policy)
    tokens, mask, proprio = _torch_inputs(policy)
    action = torch.rand(len(tokens), spec.action_dim, generator=torch.Generator().manual_seed(2)) * 2 - 1
    proprio_unit = spec.proprio_to_unit(proprio.numpy())
    ensemble, params = _perturbed_critics(spec, token_learner, tokens.numpy(), mask.numpy(), proprio_unit,
                                          action.numpy())
    q = np.asarray(ensemble.apply({"params": params}, tokens.numpy(), mask.numpy(), proprio_unit, action.numpy()))
    assert q.shape == (3, len(tokens), 1) and np.isfinite(q).all()
    queries = params["token_learner"]["queries"]
    assert queries.shape == ((2, spec.token_dim) if token_learner == "shared" else (3, 2, spec.token_dim))
    critic = policy.head.critic_like()
    for index in range(3):
        state = state_from_params(critic_head_params(params, index))
        critic.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
        with torch.no_grad():
            expected = critic(tokens, mask, policy.normalizer.proprio_to_unit(proprio), action)[:, 0].numpy()
        np.testing.assert_allclose(q[index, :, 0], expected, atol=1e-5, rtol=0)


def test_shared_token_learner_equals_per_critic_learners_that_are_all_the_same():
    import jax

    policy = tiny_policy()
    spec = HeadSpec.from_policy(policy)
    tokens, mask, proprio = (t.numpy() for t in _torch_inputs(policy))
    action = np.random.default_rng(3).uniform(-1, 1, (len(tokens), spec.action_dim)).astype(np.float32)
    proprio_unit = spec.proprio_to_unit(proprio)
    shared, params = _perturbed_critics(spec, "shared", tokens, mask, proprio_unit, action)
    copied = {"mlp": params["mlp"],
              "token_learner": jax.tree.map(lambda leaf: np.broadcast_to(leaf, (3, *leaf.shape)),
                                            params["token_learner"])}
    per_critic = CriticEnsemble(spec, 3, shared_token_learner=False)
    np.testing.assert_allclose(per_critic.apply({"params": copied}, tokens, mask, proprio_unit, action),
                               shared.apply({"params": params}, tokens, mask, proprio_unit, action),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("pool_queries", [1, 3])
def test_token_learner_gradients_match_torch(pool_queries):
    """The Flax token learner computes the torch one's function in another order (key/value projections folded into
    the queries and the pooled tokens); its parameter gradients must be torch's too, padding and an all-padding row
    included (no NaN through the masked softmax)."""
    import jax

    from irevla.learner.flax_head import TokenLearner

    policy = tiny_policy(pool_queries=pool_queries)
    spec = HeadSpec.from_policy(policy)
    tokens, mask, _ = _torch_inputs(policy)
    torch_learner = policy.head.token_learner
    with torch.no_grad():
        for parameter in torch_learner.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    weights = torch.randn(len(tokens), pool_queries * spec.token_dim, generator=torch.Generator().manual_seed(5))
    (torch_learner(tokens, mask) * weights).sum().backward()
    expected = {name: parameter.grad.numpy() for name, parameter in torch_learner.named_parameters()}

    params = params_from_state({name[len("token_learner."):]: tensor for name, tensor in policy.head_state().items()
                                if name.startswith("token_learner.")})
    module = TokenLearner(spec.token_dim, spec.pool_queries, spec.attention_heads)
    grads = jax.grad(lambda p: (module.apply({"params": p}, tokens.numpy(), mask.numpy())
                                * weights.numpy()).sum())(params)
    got = state_from_params(grads)  # the same transposes as for parameters
    assert sorted(got) == sorted(expected)
    for name, gradient in expected.items():
        assert np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got[name], gradient, atol=1e-4, rtol=1e-3, err_msg=name)
        assert np.abs(gradient).max() > 0, name  # every parameter is trained


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

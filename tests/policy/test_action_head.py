"""Token learner and action head: masking, shapes, squashing, the critic's shape; normalisation of units."""

import numpy as np
import pytest
import torch

from irevla.data.stats import ArrayStats, DatasetStats
from irevla.policy.config import HeadConfig
from irevla.policy.head import ActionHead
from irevla.policy.normalization import PROPRIO_CLIP, Normalizer
from irevla.policy.token_learner import TokenLearner
from irevla.spec import ActionSpec, ContractError


def test_padding_tokens_do_not_change_the_pooled_vector():
    torch.manual_seed(0)
    learner = TokenLearner(16, 32, num_queries=2, num_heads=4)
    tokens = torch.randn(1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    garbage = tokens.clone()
    garbage[:, 3:] = 1e4 * torch.randn(1, 2, 16)
    out = learner(tokens, mask)
    assert out.shape == (1, 64)
    torch.testing.assert_close(learner(garbage, mask), out)
    torch.testing.assert_close(learner(tokens[:, :3], mask[:, :3]), out)


def test_an_all_padding_sequence_pools_to_a_finite_vector():
    learner = TokenLearner(8, 16, num_heads=2)
    out = learner(torch.randn(2, 4, 8), torch.zeros(2, 4, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_actor_head_outputs_squashed_chunks_and_the_critic_one_value():
    torch.manual_seed(0)
    config = HeadConfig(token_dim=32, hidden=(64,), attention_heads=4, action_chunk=3)
    head = ActionHead(config, latent_dim=24, proprio_dim=4, action_dim=7)
    with torch.no_grad():
        head.mlp.out.weight.mul_(1e4)  # drive tanh into saturation: outputs must stay in [-1, 1]
    tokens, mask, proprio = torch.randn(5, 10, 24), torch.ones(5, 10, dtype=torch.bool), torch.randn(5, 4)
    actions = head(tokens, mask, proprio)
    assert actions.shape == (5, 3, 7) and actions.abs().max() <= 1.0
    critic = head.critic_like()
    values = critic(tokens, mask, proprio, extra=torch.rand(5, 7))
    assert values.shape == (5, 1)
    assert set(critic.state_dict()) == set(head.state_dict())  # same structure, same names
    with pytest.raises(ValueError, match=r"expected extra input \(B, 7\)"):
        critic(tokens, mask, proprio)
    with pytest.raises(ValueError, match=r"normalised proprio \(B, 4\)"):
        head(tokens, mask, None)


def test_head_parameter_names_are_the_documented_contract():
    head = ActionHead(HeadConfig(token_dim=16, hidden=(32, 32), attention_heads=2), 8, 4, 4)
    names = set(head.state_dict())
    for expected in ("token_learner.input_proj.weight", "token_learner.queries", "token_learner.q_proj.weight",
                     "token_learner.o_proj.bias", "token_learner.fc1.weight", "token_learner.output_norm.weight",
                     "mlp.linear0.weight", "mlp.norm0.weight", "mlp.linear1.bias", "mlp.out.weight"):
        assert expected in names
    no_norm = ActionHead(HeadConfig(token_dim=16, hidden=(32,), attention_heads=2, layer_norm=False,
                                    use_proprio=False), 8, 4, 4)
    assert "mlp.norm0.weight" not in no_norm.state_dict()
    assert no_norm.mlp.linear0.in_features == 16  # no proprio input


def _stats(actions, proprio):
    names = ("dx", "dy", "dz", "gripper")
    return DatasetStats(action=ArrayStats.from_samples(actions, names),
                        proprio=ArrayStats.from_samples(proprio, ("a", "b")), n_episodes=1, n_steps=len(actions))


def test_action_units_round_trip_and_are_clipped_to_the_spec():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.5, 0.5, (100, 4))
    actions[:, 3] = 1.0  # constant gripper: quantile mode must fall back to the spec for it
    stats = _stats(actions, rng.normal(size=(100, 2)))
    for mode in ("bounds", "quantile"):
        normalizer = Normalizer(ActionSpec.metaworld(), stats, mode)
        sample = torch.tensor(actions[:5], dtype=torch.float32)
        unit = normalizer.action_to_unit(sample)
        assert unit.abs().max() <= 1.0
        torch.testing.assert_close(normalizer.action_from_unit(unit), sample.clamp(normalizer.action_low,
                                                                                   normalizer.action_high))
        back = normalizer.action_from_unit(torch.full((1, 4), 5.0))
        assert (back <= torch.tensor(ActionSpec.metaworld().high)).all()
    quantile = Normalizer(ActionSpec.metaworld(), stats, "quantile")
    assert quantile.action_high[0] < 0.5 and quantile.action_low[3] == -1.0


def test_proprio_is_standardised_with_a_floor_on_std_and_clipped():
    proprio = np.stack([np.linspace(0, 1, 50), np.full(50, 0.3)], axis=1)  # second dimension is constant
    normalizer = Normalizer(ActionSpec.metaworld(), _stats(np.zeros((50, 4)), proprio))
    unit = normalizer.proprio_to_unit(torch.tensor([[0.5, 0.3], [0.5, 0.31], [0.5, 100.0]]))
    assert abs(float(unit[0, 0])) < 0.05 and float(unit[0, 1]) == 0.0
    assert torch.isfinite(unit).all() and unit.abs().max() <= PROPRIO_CLIP
    with pytest.raises(ContractError, match="proprio: expected 2 values"):
        normalizer.proprio_to_unit(torch.zeros(1, 3))

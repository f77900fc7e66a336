"""The VLA's action head in Flax, parameter for parameter the torch `irevla.policy.head.ActionHead`.

Stage-1 RL trains the head in JAX while the VLA (torch) acts. Both sides hold the *same* tensors under the *same*
names (``VLAPolicy.head_state()``: ``token_learner.*``, ``mlp.linear{i}.*``, ``mlp.norm{i}.*``, ``mlp.out.*``,
docs/policy.md); `params_from_state` / `state_from_params` translate between that flat name -> array mapping and a
Flax parameter tree, so parameters cross the process boundary as safetensors in both directions unchanged.

Translation rules (torch -> Flax): ``Linear.weight`` (out, in) -> ``Dense.kernel`` (in, out) transposed;
``Linear.bias`` -> ``bias``; ``LayerNorm.weight`` -> ``scale``; ``LayerNorm.bias`` -> ``bias``;
``token_learner.queries`` as is. LayerNorm epsilon 1e-5 and exact (erf) GELU, as torch's defaults.

`HeadSpec` says how big the head is (from the checkpoint's head metadata) and carries the normalisation the head's
inputs and outputs live in (proprio mean/std, action low/high), so the learner needs nothing else from torch.

Two input modes (`HeadSpec.latent`):

* ``tokens`` -- the latent is the VLM's last hidden states (m, d) + mask; the whole head (token learner + MLP) trains
  (the paper's stage 1); the critics (`CriticEnsemble`) share one token learner of their own by default.
* ``pooled`` -- the token learner is frozen at its current value and applied once by the actor; the latent is its
  (S * w) output and only the MLP trains. Much less replay memory and compute (see docs/overnight.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default
PROPRIO_CLIP = 10.0  # irevla.policy.normalization.PROPRIO_CLIP


def gelu(x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=False)  # torch's F.gelu default is the exact (erf) form


@dataclass(frozen=True)
class HeadSpec:
    """Sizes of the head and the normalisation of its inputs/outputs (JSON-serialisable, see `to_dict`)."""

    latent_dim: int  # d: width of the VLM's hidden states
    latent_length: int  # m: number of latent tokens
    proprio_dim: int  # 0 when the head does not use proprio
    action_dim: int
    token_dim: int
    pool_queries: int
    attention_heads: int
    hidden: tuple[int, ...]
    layer_norm: bool
    action_chunk: int = 1
    latent: Literal["tokens", "pooled"] = "tokens"
    proprio_mean: tuple[float, ...] = ()
    proprio_std: tuple[float, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    action_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.latent not in ("tokens", "pooled"):
            raise ValueError(f"HeadSpec.latent: expected 'tokens' or 'pooled', got {self.latent!r}")
        for name, size in (("proprio_mean", self.proprio_dim), ("proprio_std", self.proprio_dim),
                           ("action_low", self.action_dim), ("action_high", self.action_dim)):
            value = getattr(self, name)
            if value and len(value) != size:
                raise ValueError(f"HeadSpec.{name}: expected {size} values, got {len(value)}")

    @property
    def pooled_dim(self) -> int:
        return self.pool_queries * self.token_dim

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one stored latent: (m, d) tokens or (S * w,) pooled."""
        return (self.latent_length, self.latent_dim) if self.latent == "tokens" else (self.pooled_dim,)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"HeadSpec: unknown fields {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_policy(cls, policy, latent: Literal["tokens", "pooled"] = "tokens") -> HeadSpec:
        """The spec of a torch `VLAPolicy`'s head, with its normaliser's constants."""
        head, normalizer, config = policy.head, policy.normalizer, policy.config.head
        return cls(latent_dim=head.latent_dim, latent_length=policy.latent_shape[0], proprio_dim=head.proprio_dim,
                   action_dim=head.action_dim, token_dim=config.token_dim, pool_queries=config.pool_queries,
                   attention_heads=config.attention_heads, hidden=tuple(config.hidden), layer_norm=config.layer_norm,
                   action_chunk=config.action_chunk, latent=latent,
                   proprio_mean=tuple(float(v) for v in normalizer.proprio_mean.cpu().numpy()),
                   proprio_std=tuple(float(v) for v in normalizer.proprio_std.cpu().numpy()),
                   action_low=tuple(float(v) for v in normalizer.action_low.cpu().numpy()),
                   action_high=tuple(float(v) for v in normalizer.action_high.cpu().numpy()),
                   action_names=tuple(policy.action_spec.names))

    # ---------------------------------------------------------------------------------------- normalisation
    def proprio_to_unit(self, proprio: jax.Array) -> jax.Array:
        if not self.proprio_dim:
            return proprio[..., :0]
        mean, std = jnp.asarray(self.proprio_mean, jnp.float32), jnp.asarray(self.proprio_std, jnp.float32)
        return jnp.clip((proprio - mean) / std, -PROPRIO_CLIP, PROPRIO_CLIP)

    def action_to_unit(self, actions: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return np.clip(2.0 * (actions - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)

    def action_from_unit(self, unit: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)
        return (low + (np.clip(unit, -1.0, 1.0) + 1.0) * 0.5 * (high - low)).astype(np.float32)


class DenseParams(nn.Module):
    """The parameters of an ``nn.Dense(features)`` on `in_features` inputs (same names, shapes and initialisers),
    returned instead of applied, for a caller that folds the projection into another product."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,))


class TokenLearner(nn.Module):
    """irevla.policy.token_learner.TokenLearner in Flax (same computation, same parameter names).

    Computed in a cheaper but equal order: with S (a few) queries attending over m tokens, the key and value
    projections of every token (2 x m x w x w multiply-adds per observation) fold into the queries and into the
    attention-pooled tokens instead (q Wk^T scores the normalised tokens directly; the pooled tokens are projected by
    Wv once per query), which leaves the input projection as the only m x d x w product. The torch head computes
    k = x Wk + bk and v = x Wv + bv per token; the results agree to float rounding (tests/learner/
    test_flax_head_parity.py), and stage 1 trains this token learner many times per update (docs/benchmarks.md).
    """

    width: int
    num_queries: int
    num_heads: int

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        batch, width = tokens.shape[0], self.width
        heads, head_dim = self.num_heads, width // self.num_heads
        norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name=name)  # noqa: E731
        queries = self.param("queries", nn.initializers.normal(0.02), (self.num_queries, width))
        x = norm("input_norm")(nn.Dense(width, name="input_proj")(tokens))  # (B, m, w)
        q = nn.Dense(width, name="q_proj")(queries).reshape(self.num_queries, heads, head_dim)
        k_kernel, k_bias = DenseParams(width, width, name="k_proj")()
        v_kernel, v_bias = DenseParams(width, width, name="v_proj")()
        # scores[b, s, h, k] = q[s, h] . (x[b, k] Wk + bk)[h] = x[b, k] . (Wk_h q[s, h]) + q[s, h] . bk_h: one plain
        # (B * m, w) x (w, S * h) product (XLA's CPU dots are fastest in this 2-D form, forward and backward)
        length, rows = tokens.shape[1], self.num_queries * heads
        q_keys = jnp.einsum("shc,whc->shw", q, k_kernel.reshape(width, heads, head_dim)).reshape(rows, width)
        q_bias = jnp.einsum("shc,hc->sh", q, k_bias.reshape(heads, head_dim)).reshape(rows)
        scores = (x.reshape(batch * length, width) @ q_keys.T + q_bias).reshape(batch, length, rows)
        scores = jnp.where(mask[:, None, :], scores.transpose(0, 2, 1) / math.sqrt(head_dim), -jnp.inf)
        weights = jnp.nan_to_num(jax.nn.softmax(scores, axis=-1), nan=0.0)  # (B, S*h, m); all padding pools to 0
        # sum_k a[k] (x[k] Wv + bv) = (sum_k a[k] x[k]) Wv + (sum_k a[k]) bv, per head
        pooled = jax.lax.batch_matmul(weights, x).reshape(batch, self.num_queries, heads, width)
        attended = (jnp.einsum("bshw,whc->bshc", pooled, v_kernel.reshape(width, heads, head_dim))
                    + weights.sum(-1).reshape(batch, self.num_queries, heads, 1) * v_bias.reshape(heads, head_dim))
        z = queries[None] + nn.Dense(width, name="o_proj")(attended.reshape(batch, self.num_queries, width))
        z = z + nn.Dense(width, name="fc2")(gelu(nn.Dense(4 * width, name="fc1")(norm("mlp_norm")(z))))
        return norm("output_norm")(z).reshape(batch, self.num_queries * width)


class MLP(nn.Module):
    hidden: tuple[int, ...]
    output_dim: int
    layer_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for index, size in enumerate(self.hidden):
            x = nn.Dense(size, name=f"linear{index}")(x)
            if self.layer_norm:
                x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name=f"norm{index}")(x)
            x = gelu(x)
        return nn.Dense(self.output_dim, name="out")(x)


class FlaxHead(nn.Module):
    """latent (+ normalised proprio, + extra) -> pre-activation output (B, output_dim).

    An actor head has ``output_dim = A`` and the caller applies tanh (the VLA's action is ``tanh(output)``); a critic
    head has ``extra`` = the action and ``output_dim = 1``. With ``pooled`` the latent is already pooled (B, S * w)
    and the module has no token learner.
    """

    spec: HeadSpec
    output_dim: int

    @nn.compact
    def __call__(self, latent: jax.Array, mask: jax.Array | None, proprio_unit: jax.Array,
                 extra: jax.Array | None = None) -> jax.Array:
        spec = self.spec
        if spec.latent == "tokens":
            pooled = TokenLearner(spec.token_dim, spec.pool_queries, spec.attention_heads,
                                  name="token_learner")(latent.astype(jnp.float32), mask)
        else:
            pooled = latent.astype(jnp.float32)
        return MLP(tuple(spec.hidden), self.output_dim, spec.layer_norm, name="mlp")(
            mlp_input(spec, pooled, proprio_unit, extra))


def mlp_input(spec: HeadSpec, pooled: jax.Array, proprio_unit: jax.Array, extra: jax.Array | None) -> jax.Array:
    """The head MLP's input: concat(pooled, proprio (if the head uses it), extra (a critic's action)). `pooled` may
    carry leading ensemble axes (N, B, S * w); proprio and extra (B, ...) are broadcast to them."""
    parts = ([proprio_unit] if spec.proprio_dim else []) + ([] if extra is None else [extra])
    lead = pooled.shape[:-1]
    return jnp.concatenate([pooled, *(jnp.broadcast_to(p, (*lead, p.shape[-1])) for p in parts)], -1)


class CriticEnsemble(nn.Module):
    """``num_critics`` Q heads of the head's structure: (latent, normalised proprio, unit action) -> (N, B, 1).

    Each critic is a token learner + MLP like the actor head, the action joining the MLP's input. With token latents
    the token learner is either **shared** (one token learner pools each observation once and its output feeds every
    critic's MLP: SERL's ensembles share one encoder the same way) or **per critic** (N independent token learners, the
    layout before sharing; kept for comparison). The ensemble is always in the MLPs. With pooled latents there is no
    token learner and both layouts are the same network.

    Parameters: ``token_learner`` (leaves (N, ...) per critic, unbatched when shared) and ``mlp`` (leaves (N, ...));
    per critic, critic i is exactly ``FlaxHead(spec, 1)`` with the i-th slice of every leaf, and when shared with the
    i-th MLP slice and the one token learner -- `critic_head_params` takes that slice.
    """

    spec: HeadSpec
    num_critics: int
    shared_token_learner: bool = True

    @nn.compact
    def __call__(self, latent: jax.Array, mask: jax.Array | None, proprio_unit: jax.Array,
                 action: jax.Array) -> jax.Array:
        spec, count = self.spec, self.num_critics
        ensemble = {"variable_axes": {"params": 0}, "split_rngs": {"params": True}, "axis_size": count}
        if spec.latent == "pooled":
            features, per_critic = latent.astype(jnp.float32), False
        elif self.shared_token_learner:
            features = TokenLearner(spec.token_dim, spec.pool_queries, spec.attention_heads,
                                    name="token_learner")(latent.astype(jnp.float32), mask)
            per_critic = False
        else:
            learners = nn.vmap(TokenLearner, in_axes=None, **ensemble)
            features = learners(spec.token_dim, spec.pool_queries, spec.attention_heads,
                                name="token_learner")(latent.astype(jnp.float32), mask)  # (N, B, S * w)
            per_critic = True
        mlps = nn.vmap(MLP, in_axes=0 if per_critic else None, **ensemble)
        return mlps(tuple(spec.hidden), 1, spec.layer_norm, name="mlp")(mlp_input(spec, features, proprio_unit,
                                                                                  action))


def critic_head_params(critic_params: Mapping[str, Any], index: int) -> dict:
    """Critic `index` of a `CriticEnsemble`'s parameters as one `FlaxHead(spec, 1)` tree (its MLP slice; its own or
    the shared token learner), e.g. to read it with torch names via `state_from_params`."""
    def take(tree, batched: bool):
        return jax.tree.map(lambda leaf: leaf[index] if batched else leaf, tree)

    head = {"mlp": take(critic_params["mlp"], True)}
    if "token_learner" in critic_params:
        queries = critic_params["token_learner"]["queries"]
        head["token_learner"] = take(critic_params["token_learner"], queries.ndim == 3)
    return head


# ------------------------------------------------------------------------------------------ torch names <-> tree
def _is_layer_norm(module_name: str) -> bool:
    last = module_name.rsplit(".", 1)[-1]  # input_norm, mlp_norm, output_norm, norm0, norm1, ...
    return last.endswith("norm") or last.startswith("norm")


def params_from_state(state: Mapping[str, Any], prefix: str = "") -> dict:
    """Flat torch-named arrays (``head_state()``) -> a Flax parameter tree (nested dicts of jnp arrays).

    `prefix` keeps only names starting with it (e.g. ``"mlp."`` for a pooled head) and strips nothing else.
    """
    tree: dict = {}
    for name, value in state.items():
        if not name.startswith(prefix):
            continue
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float32)
        *modules, leaf = name.split(".")
        if leaf == "queries":
            path, array_out = [*modules, "queries"], array
        elif leaf == "weight" and _is_layer_norm(".".join(modules)):
            path, array_out = [*modules, "scale"], array
        elif leaf == "weight":
            path, array_out = [*modules, "kernel"], array.T
        elif leaf == "bias":
            path, array_out = [*modules, "bias"], array
        else:
            raise ValueError(f"params_from_state: unexpected tensor name {name!r}")
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(np.ascontiguousarray(array_out))
    return tree


def state_from_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A Flax parameter tree -> flat torch-named float32 numpy arrays (the inverse of `params_from_state`)."""
    state: dict[str, np.ndarray] = {}

    def visit(node: Mapping[str, Any], path: list[str]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                visit(value, [*path, key])
                continue
            array = np.array(value, dtype=np.float32)  # a writable copy (jax arrays are read-only views)
            if key == "kernel":
                state[".".join([*path, "weight"])] = np.ascontiguousarray(array.T)
            elif key == "scale":
                state[".".join([*path, "weight"])] = array
            else:  # bias, queries
                state[".".join([*path, key])] = array

    visit(params, [])
    return state


def check_tree_matches(params: Mapping[str, Any], reference: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming the first parameter whose presence or shape differs between two trees."""
    flat = {"/".join(str(k.key) for k in path): v.shape for path, v in jax.tree_util.tree_leaves_with_path(params)}
    expected = {"/".join(str(k.key) for k in path): v.shape
                for path, v in jax.tree_util.tree_leaves_with_path(reference)}
    missing, unexpected = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{where}: head parameters do not match: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for name, shape in expected.items():
        if tuple(flat[name]) != tuple(shape):
            raise ValueError(f"{where}: parameter {name}: expected shape {tuple(shape)}, got {tuple(flat[name])}")

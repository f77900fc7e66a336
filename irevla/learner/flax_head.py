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

* ``tokens`` -- the latent is the VLM's last hidden states (m, d) + mask; the whole head (token learner + MLP) trains.
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


class TokenLearner(nn.Module):
    """irevla.policy.token_learner.TokenLearner in Flax (same computation, same parameter names)."""

    width: int
    num_queries: int
    num_heads: int

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        batch = tokens.shape[0]
        heads, head_dim = self.num_heads, self.width // self.num_heads
        norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name=name)  # noqa: E731
        queries = self.param("queries", nn.initializers.normal(0.02), (self.num_queries, self.width))
        x = norm("input_norm")(nn.Dense(self.width, name="input_proj")(tokens))
        q = nn.Dense(self.width, name="q_proj")(queries).reshape(1, self.num_queries, heads, head_dim)
        k = nn.Dense(self.width, name="k_proj")(x).reshape(batch, -1, heads, head_dim)
        v = nn.Dense(self.width, name="v_proj")(x).reshape(batch, -1, heads, head_dim)
        scores = jnp.einsum("bqhc,bkhc->bhqk", jnp.broadcast_to(q, (batch, *q.shape[1:])), k) / math.sqrt(head_dim)
        scores = jnp.where(mask[:, None, None, :], scores, -jnp.inf)
        weights = jnp.nan_to_num(jax.nn.softmax(scores, axis=-1), nan=0.0)  # an all-padding row pools to 0
        attended = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(batch, self.num_queries, self.width)
        z = queries[None] + nn.Dense(self.width, name="o_proj")(attended)
        z = z + nn.Dense(self.width, name="fc2")(gelu(nn.Dense(4 * self.width, name="fc1")(norm("mlp_norm")(z))))
        return norm("output_norm")(z).reshape(batch, self.num_queries * self.width)


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
        parts = [pooled]
        if spec.proprio_dim:
            parts.append(proprio_unit)
        if extra is not None:
            parts.append(extra)
        return MLP(tuple(spec.hidden), self.output_dim, spec.layer_norm, name="mlp")(jnp.concatenate(parts, -1))


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

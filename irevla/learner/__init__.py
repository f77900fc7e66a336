"""The stage-1 RL library: JAX/Flax/optax only (no torch, no robot, no application layer).

``learner.py`` the shared `Learner` (episode intake, demo buffer, head publishing, snapshots, counters);
``sac.py`` / ``ppo.py`` the algorithms (SAC with a REDQ ensemble on RLPD demo/online batches; PPO), each an agent
plus its `Learner` subclass; ``registry.py`` names them with their settings models (``config.py``, pydantic, no
JAX); ``replay.py`` the latent replay; ``flax_head.py`` the Flax mirror of the VLA's action head; ``process.py`` the
learner process's loop (``cli.py``: ``irevla learner serve``).
"""

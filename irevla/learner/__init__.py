"""The stage-1 RL library: JAX/Flax/optax only (no torch, no robot). SAC (REDQ ensemble, RLPD demo/online batches)
and PPO on cached frozen-VLM latents, the replay buffers, the Flax mirror of the VLA's action head, the learner process.
"""

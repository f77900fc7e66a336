"""The actor <-> learner link of stage 1: numpy + pyzmq only (no torch, no JAX), so both sides can use it.

`messages` holds what crosses (transitions, episode ends, heads); the ZeroMQ transport carries them between processes.
"""

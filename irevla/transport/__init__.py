"""The actor <-> learner link of stage 1: numpy + pyzmq only (no torch, no JAX), so both sides can use it.

`messages` holds what crosses (transitions, episode ends, heads); `wire` the format and authentication (a token on
loopback, CURVE keys beyond); `actor_side.ZmqLearnerLink` and `learner_side.LearnerServer` carry whole episodes.
"""

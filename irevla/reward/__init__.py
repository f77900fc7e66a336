"""Success detection for unattended stage 1: a detector on the VLA's own frozen VLM latents, and the reward sources.

* `irevla.reward.features`: what the detector sees -- the frozen VLM's last hidden states of one observation
  (the same encode the stage-1 actor runs), pooled to one vector; the VLM fingerprint a detector is bound to;
* `irevla.reward.labels`: frame labels from episodes (successes' last frames, per-step rewards, human labels);
* `irevla.reward.detector`: the detector (a small MLP), its decision rule and its file format
  (safetensors + JSON, bound to one VLM);
* `irevla.reward.train` / `irevla.reward.evaluate`: ``irevla reward train`` / ``irevla reward eval``;
* `irevla.reward.sources`: where an episode's success comes from -- ``env``, ``human``, ``classifier``,
  ``classifier+human`` -- behind one interface, used by the simulated loop, the robot loop and vla_policy.

Torch and numpy only: no JAX, no ROS (the robot's node wraps `irevla.reward.sources` at its edge).
"""

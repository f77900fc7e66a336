"""The VLA policy (torch): backbone adapters, token learner, action head, checkpoints, SFT. (policy issue)"""

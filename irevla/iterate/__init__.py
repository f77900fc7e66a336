"""The application layer: the iRe-VLA loop (Algorithm 1) that drives every other package.

`loop` runs the stages (demos, SFT, stage 1, stage 2, evaluation) resumably; `config` is its typed config; `envs` the
one env factory (simulation, or the robot's gymnasium env); `actor` one simulated stage-1 episode; `handoff` what
passes between the torch VLA and the JAX learner; `report` the results table and plot; `cli` the commands.
"""

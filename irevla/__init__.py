"""irevla: iRe-VLA (Guo et al., ICRA 2025) as a robot-learning stack. The contract lives in `irevla.spec`."""

__version__ = "0.1.0"

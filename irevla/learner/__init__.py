"""Stage-1 RL on frozen-VLM latents (JAX/Flax), transport, and the iRe-VLA loop. (loop issue)"""

"""Shared set-up for the transport tests: offline Hugging Face, one torch thread, the policy tests' tiny factories."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

# tiny_policy / write_dataset live with the policy tests; the learner tests build on the same tiny models.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "policy"))

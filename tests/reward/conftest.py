"""Shared set-up for the reward tests: offline Hugging Face, one torch thread, the policy tests' tiny factories."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "policy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

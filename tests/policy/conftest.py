"""Shared set-up for the policy tests: offline Hugging Face, one torch thread, small synthetic datasets.

One thread: the tiny models here are too small to gain from two, and on a busy 2-core machine two OpenMP threads
spinning against other processes make torch many times slower.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from policy_factory import write_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """Two tasks x 4 episodes of 32x32 images whose actions follow from the instruction and the image."""
    return write_dataset(tmp_path_factory.mktemp("episodes"), episodes_per_task=4)

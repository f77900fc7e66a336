"""Data-parallel SFT, the multi-GPU path, run for real on the CPU: ``accelerate launch --multi_gpu --num_processes 2``
on a machine without a GPU starts two processes through torchrun, and the Accelerator joins them over gloo
(inside a private network namespace: loopback only). (``accelerate launch --cpu --num_processes 2`` is not the
same: on one machine without an MPI hostfile accelerate runs the script once.) Each trains
on its own half of every batch; DDP averages the gradients, so both must end with identical weights -- the run
checks that itself and each process records what it trained on (``<out>/processes/rank-<k>.json``)."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from policy_factory import tiny_config, write_dataset

from irevla.policy.checkpoint import load_policy

VENV_BIN = Path(sys.executable).parent


def _namespace_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize(("kind", "training"), [("qwen2_5_vl", "lora"), ("smolvlm", "full")])
def test_two_processes_train_on_different_samples_and_end_with_identical_weights(tmp_path, kind, training):
    """LoRA, and full fine-tuning of a model whose vocabulary projection is not tied to its embeddings (it must not
    train: DDP stops at the second step on a trainable weight that gets no gradient)."""
    accelerate = VENV_BIN / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed (the policy extra installs it)")
    if not _namespace_available():
        pytest.skip("cannot create a private network namespace (unshare -n): torch.distributed would open a port")
    data = write_dataset(tmp_path / "data", episodes_per_task=3)
    out = tmp_path / "run"
    config = {"policy": tiny_config(kind, training=training).model_dump(mode="json"),
              "data": {"dirs": [str(data)], "val_fraction": 0.0}, "out": str(out),
              "train": {"steps": 3, "batch_size": 8, "warmup_steps": 0, "log_every": 1, "checkpoint_every": 3,
                        "tensorboard": False, "lr": 1e-3, "head_lr": 1e-3, "threads": 1}}
    config_path = tmp_path / "sft.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = random.randint(20000, 40000)
    command = (f"ip link set lo up && exec {accelerate} launch --multi_gpu --num_processes 2 --num_machines 1 "
               f"--mixed_precision no --dynamo_backend no --main_process_ip 127.0.0.1 --main_process_port {port} "
               f"-m irevla sft --config {config_path}")
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="",
                       PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["unshare", "-n", "sh", "-c", command], env=environment, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [json.loads((out / "processes" / f"rank-{k}.json").read_text()) for k in range(2)]
    assert [r["process_index"] for r in ranks] == [0, 1] and all(r["num_processes"] == 2 for r in ranks)
    assert [r["samples"] for r in ranks] == [12, 12]  # 3 steps x half of a batch of 8
    first = [{tuple(sample) for sample in r["first_samples"]} for r in ranks]
    assert first[0] and first[1] and not first[0] & first[1]  # different samples
    assert ranks[0]["samples_sha256"] != ranks[1]["samples_sha256"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # identical replicas
    policy = load_policy(out / "policy")
    assert bool(policy.lora_layers) == (training == "lora")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["process_index"] == 0
    assert result.stdout.count("SFT done") == 1  # one process reports for the run


def test_processes_that_disagree_stop_the_run_before_anything_is_saved(tmp_path):
    """The check itself, with a second process's hash as a diverged replica would report it."""
    import torch
    from policy_factory import tiny_policy

    from irevla.policy.sft import ProcessRecord

    policy = tiny_policy("qwen2_vl", training="lora")
    record = ProcessRecord(0, 2)
    record.saw(torch.tensor([0, 1]), torch.tensor([5, 6]))
    with pytest.raises(RuntimeError, match="processes ended with different weights"):
        record.check_same_weights(tmp_path, policy, lambda mine: mine + ["0" * 64])
    saved = json.loads((tmp_path / "processes" / "rank-0.json").read_text())
    assert saved["samples"] == 2 and saved["first_samples"] == [[0, 5], [1, 6]]
    assert saved["weights_sha256"] == ProcessRecord.weights_sha256(policy)
    record.check_same_weights(tmp_path, policy, lambda mine: mine * 2)  # replicas that agree pass
    with torch.no_grad():  # the hash covers what trains: a changed adapter changes it
        next(p for n, p in policy.named_parameters() if ".lora_B" in n).add_(1.0)
    assert ProcessRecord.weights_sha256(policy) != saved["weights_sha256"]

"""The attempts mode of bench/bench_policy.py (the GPU latency benchmark of issue 3), run as its CPU smoke.

No GPU here: this proves that every path that does not need CUDA runs and is recorded, that the CUDA-only attempts
are recorded as skipped (with the correctness check of the function they would capture), and that the JSON a GPU
run writes has the fields docs/benchmarks.md reads.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_policy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_policy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_mode_records_every_attempt(bench, tmp_path):
    out = tmp_path / "latency.json"
    # One batch size: torch.compile traces each shape once, and tracing is most of this test's time.
    with torch.random.fork_rng(devices=[]):  # the benchmark seeds torch's global generator
        report = bench.main(["--quick", "--batch-sizes", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["benchmark"] == "policy_latency"
    assert report["parameters"]["preset"] == "tiny" and report["machine"]["device"] == "cpu"
    model = report["model"]
    assert model["total_params"] == model["backbone_params"] + model["head_params"] > 0
    assert model["weight_mb"] > 0 and model["build_peak_memory_mb"] is None  # no CUDA counter on the CPU

    attempts = report["attempts"]
    assert list(attempts) == ["eager", "static_prefix", "graph_capture", "static_prefix_graph", "cuda_graphs",
                              "compile"]  # cheapest first; SFT runs before the torch.compile attempts
    for name in ("eager", "static_prefix", "compile"):
        record = attempts[name]
        assert record["status"] == "ok", record
        act = record["act_b1"]
        assert 0 < act["min_ms"] <= act["p50_ms"] <= act["p99_ms"] and act["iters"] == 3
    assert attempts["eager"]["encode_b1"]["p50_ms"] > 0
    assert attempts["compile"]["backend"] == "eager" and attempts["compile"]["dynamo"]["unique_graphs"] >= 1
    for name in ("graph_capture", "static_prefix_graph", "cuda_graphs"):
        assert attempts[name]["status"] == "skipped" and "CUDA" in attempts[name]["reason"]
    # The functions the CUDA graphs would capture are checked on the CPU all the same.
    assert attempts["graph_capture"]["check"]["max_abs_diff_vs_predict"] < 1e-5
    for name in ("static_prefix", "static_prefix_graph"):
        assert attempts[name]["check"]["max_abs_diff_cached_vs_uncached"] < 1e-4
        assert "reordered" in attempts[name]["note"]

    sft = report["sft_lora"]
    assert sft["status"] == "ok", sft
    assert sft["samples_per_s"] > 0 and sft["lora_layers"] > 0 and sft["trainable_backbone_params"] > 0
    summary = report["summary"]
    assert summary["goal_hz"] == 100 and summary["best_act_b1_attempt"] in attempts


def test_a_failing_attempt_is_recorded_not_fatal(bench):
    memory = bench.Memory(torch.device("cpu"))

    def broken():
        raise RuntimeError("capture failed")

    record = bench.record_phase(broken, memory)
    assert record["status"] == "error" and "RuntimeError: capture failed" in record["error"]
    assert "traceback" in record and record["seconds"] >= 0


def test_attempt_names_are_checked(bench):
    assert bench.parse_attempts("all") == list(bench.ATTEMPTS)
    assert bench.parse_attempts("eager, compile") == ["eager", "compile"]
    with pytest.raises(Exception, match="unknown attempts"):
        bench.parse_attempts("eager,warp_drive")
    assert bench.phase_order(["compile", "eager", "cuda_graphs"], sft=True) == ["eager", "sft_lora", "cuda_graphs",
                                                                                   "compile"]

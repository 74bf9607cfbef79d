"""The peers report: the peak fraction against the precision each system trained in, and the trl-liger target."""

from __future__ import annotations

import pytest

from bench.peers.report import check_targets, markdown, summarize, trained_precision

# An AVX2 CPU: fp32 at 50 GFLOP/s, bf16 emulated at 0.9 GFLOP/s (the EPYC of docs/performance.md).
PEAKS = {"float32": 50.0, "bfloat16": 0.9}
FLOPS_PER_TOKEN = 1e9  # 1 GFLOP per token: tokens/s reads as GFLOP/s


def run(system: str, tokens_per_s: float, settings: dict) -> dict:
    return {"system": system, "round": 0, "supervised_tokens_per_s": tokens_per_s / 2, "tokens_per_s": tokens_per_s,
            "peak_rss_mb": 1000.0, "train_loss": 1.0, "wall_seconds": 1.0, "median_step_s": 1.0,
            "step_supervised_tokens": [10], "setup_seconds": 1.0, "settings": settings}


def test_the_precision_comes_from_each_systems_settings():
    assert trained_precision({"precision": "bf16", "bf16": False}) == "bf16"  # lmtune names it
    assert trained_precision({"bf16": True}) == "bf16"  # the Trainer-based systems
    assert trained_precision({"bf16": False}) == "fp32"


def test_each_system_is_measured_against_the_peak_of_its_own_precision():
    runs = [run("lmtune", 20.0, {"precision": "fp32"}), run("trl-best", 0.45, {"bf16": True}),
            run("trl-liger", 10.0, {"bf16": True, "why": {}})]
    systems = {s["system"]: s for s in summarize(runs, {}, FLOPS_PER_TOKEN, PEAKS)}
    assert systems["lmtune"]["precision"] == "fp32"
    assert systems["lmtune"]["fraction_of_peak"] == pytest.approx(20.0 / 50.0)
    # A bf16 run is measured against the bf16 peak, however slow bf16 is on this machine.
    assert systems["trl-best"]["fraction_of_peak"] == pytest.approx(0.45 / 0.9)
    # The fp32 run would read 22x its peak against the emulated bf16 one: that figure is kept apart.
    assert systems["lmtune"]["fraction_of_bf16_peak"] == pytest.approx(20.0 / 0.9)
    targets = check_targets(list(systems.values()), "lmtune")
    assert targets["fraction_of_peak"] == {"value": pytest.approx(0.4), "target": ">= 0.30 of the fp32 peak",
                                           "met": True}
    assert targets["speed_vs_trl_liger"]["value"] == pytest.approx(2.0)
    assert targets["speed_vs_trl_liger"]["met"]


def test_the_markdown_shows_the_precision_and_its_peak_fraction():
    runs = [run("lmtune", 20.0, {"precision": "fp32"}), run("trl-liger", 9.0, {"bf16": True, "why": {"x": "y"}})]
    systems = summarize(runs, {}, FLOPS_PER_TOKEN, PEAKS)
    result = {"machine": {"cpu": "cpu", "cores": 2, "torch_threads": 2, "ram_gib": 8, "isa": ["avx2"], "gpu": None,
                          "native_bf16": False, "versions": dict.fromkeys(
                              ("torch", "transformers", "trl", "peft", "accelerate"), "1")},
              "spec": {"steps": 1, "batch_size": 1, "grad_accum": 1, "learning_rate": 1e-4, "scheduler": "cosine",
                       "warmup_ratio": 0.0, "lora": {"r": 16, "alpha": 32, "dropout": 0.05}, "max_length": 512},
              "smoke": False, "started": "now", "command": "python -m bench.peers", "peaks": PEAKS,
              "model": "m", "parameters": {"total": 2, "nonembedding": 1}, "train_examples": 1, "rounds": 1,
              "longest_example": 10, "eval_examples": 1, "base_eval_loss": None, "flops_formula": "6N",
              "systems": systems, "targets": {"lmtune": check_targets(systems, "lmtune")}}
    text = markdown(result)
    assert "| precision | of its peak |" in text
    assert "| fp32 | 0.400 |" in text and "| bf16 | 10.000 |" in text
    assert "trl-liger settings and why:" in text

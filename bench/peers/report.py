"""Turn the runs of the comparison into one record per system, the target checks, and a markdown report.

    systems = summarize(runs, evals, flops_per_token, peaks)
    targets = check_targets(systems, "lmtune")   # or "lmtune-lowmem"
    text = markdown(result)                       # result = the JSON written to bench/results/
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.peers.common import LMTUNE_SYSTEMS, SYSTEMS


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# The probed peak each training precision runs at: fp16 uses the same matrix units as bf16 on GPUs
# and AMX CPUs, and only bf16 is probed.
PEAK_OF_PRECISION = {"fp32": "float32", "bf16": "bfloat16", "fp16": "bfloat16"}


def trained_precision(settings: dict[str, Any]) -> str:
    """The precision a run's matrix products ran in: lmtune names it, the Trainer-based systems say bf16 or not."""
    if "precision" in settings:
        return settings["precision"]
    return "bf16" if settings.get("bf16") else "fp32"


def fraction_of_peak(model_flops: float | None, precision: str, peaks: dict[str, float]) -> float | None:
    """Model FLOP/s over the measured matmul peak (GFLOP/s) of the precision the run trained in."""
    if not model_flops:
        return None
    return model_flops / (peaks[PEAK_OF_PRECISION[precision]] * 1e9)


def summarize(runs: list[dict[str, Any]], evals: dict[str, dict[str, Any]], flops_per_token: float,
              peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One record per system: medians of throughput over rounds, the largest peak RSS, round-0 losses."""
    out = []
    for name in SYSTEMS:
        mine = [r for r in runs if r["system"] == name]
        if not mine:
            continue
        tokens = _median([r["tokens_per_s"] for r in mine])
        model_flops = flops_per_token * tokens if tokens else None
        precision = trained_precision(mine[0]["settings"])
        record = {
            "system": name,
            "runs": len(mine),
            "precision": precision,
            "supervised_tokens_per_s": _median([r["supervised_tokens_per_s"] for r in mine]),
            "tokens_per_s": tokens,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
            "train_loss": mine[0]["train_loss"],
            "eval_loss": evals.get(name, {}).get("eval_loss"),
            "model_tflops_per_s": model_flops / 1e12 if model_flops else None,
            "fraction_of_fp32_peak": model_flops / (peaks["float32"] * 1e9) if model_flops else None,
            "fraction_of_bf16_peak": model_flops / (peaks["bfloat16"] * 1e9) if model_flops else None,
            # The one that means something: an fp32 run against a bf16 peak would look poor on a GPU, and
            # a bf16 run against an emulated bf16 peak (0.9 GFLOP/s on an AVX2 CPU) would look excellent.
            "fraction_of_peak": fraction_of_peak(model_flops, precision, peaks),
            "median_step_s": _median([r["median_step_s"] for r in mine]),
            "supervised_tokens_trained": sum(mine[0]["step_supervised_tokens"]),
            "setup_s": _median([r["setup_seconds"] for r in mine]),
            "settings": mine[0]["settings"],
            "rounds": [{k: r[k] for k in ("round", "supervised_tokens_per_s", "tokens_per_s", "peak_rss_mb",
                                          "train_loss", "wall_seconds")} for r in mine],
        }
        if "peak_gpu_mb" in mine[0]:
            record["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in mine)
        out.append(record)
    return out


def check_targets(systems: list[dict[str, Any]], name: str = "lmtune") -> dict[str, Any]:
    """The issue's targets for one lmtune system, each with the measured value; reported, never asserted."""
    by = {s["system"]: s for s in systems}
    lm = by.get(name)
    if lm is None:
        return {}

    def ratio(key: str, other: str) -> float | None:
        o = by.get(other)
        return lm[key] / o[key] if o and lm[key] and o[key] else None

    def loss_gap(other: str) -> float | None:
        o = by.get(other)
        return (lm["eval_loss"] - o["eval_loss"]) / o["eval_loss"] if o and lm["eval_loss"] and o["eval_loss"] else None

    speed2, speed3 = ratio("supervised_tokens_per_s", "trl-default"), ratio("supervised_tokens_per_s", "trl-best")
    speed_liger = ratio("supervised_tokens_per_s", "trl-liger")
    # On a GPU the constraint is the device's memory; the process's RSS holds mostly the loaded checkpoint.
    on_gpu = "peak_gpu_mb" in lm and "peak_gpu_mb" in by.get("trl-default", {})
    memory = ratio("peak_gpu_mb" if on_gpu else "peak_rss_mb", "trl-default")
    gaps = {s: loss_gap(s) for s in by if s not in LMTUNE_SYSTEMS}
    targets = {
        "speed_vs_trl_default": {"value": speed2, "target": ">= 3", "met": speed2 is not None and speed2 >= 3},
        "speed_vs_trl_best": {"value": speed3, "target": ">= 1.5", "met": speed3 is not None and speed3 >= 1.5},
        "eval_loss_gap": {"value": gaps, "target": "within 2 % (lmtune - other) / other",
                          "met": bool(gaps) and all(g is not None and g <= 0.02 for g in gaps.values())},
        "memory_vs_trl_default": {"value": memory, "target": "<= 0.5" + (" (peak GPU memory)" if on_gpu else ""),
                                  "met": memory is not None and memory <= 0.5},
        "fraction_of_peak": {"value": lm["fraction_of_peak"], "target": f">= 0.30 of the {lm['precision']} peak",
                             "met": (lm["fraction_of_peak"] or 0) >= 0.30},
    }
    if "trl-liger" in by:
        targets["speed_vs_trl_liger"] = {"value": speed_liger, "target": ">= 1.5",
                                         "met": speed_liger is not None and speed_liger >= 1.5}
    return targets


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def probes_note(probes: list[dict[str, float]]) -> str:
    """' (best of probes before and after the runs: ...)' when the peak was probed more than once."""
    if len(probes) < 2:
        return ""
    each = "; ".join(f"fp32 {p['float32']:.1f}, bf16 {p['bfloat16']:.1f}" for p in probes)
    return f" (best of the probes before and after the runs: {each})"


def markdown(result: dict[str, Any]) -> str:
    """The report: machine, recipe, the table per system, targets, generation and serving latency."""
    m, spec = result["machine"], result["spec"]
    gpu = any("peak_gpu_mb" in s for s in result["systems"])
    v = m["versions"]
    smoke = "SMOKE RUN — checks the harness only; these figures are not results. " if result["smoke"] else ""
    lines = [
        f"# lmtune vs HF Trainer vs TRL ({result['started']})", "",
        f"{smoke}Command: `{result['command']}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['ram_gib']} GiB RAM, "
        f"ISA {'/'.join(m['isa']) or '—'}, GPU {m['gpu'] or 'none'}, native bf16: {m['native_bf16']}. "
        f"torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, peft {v['peft']}, "
        f"accelerate {v['accelerate']}.", "",
        f"Measured matmul peak: fp32 {result['peaks']['float32']:.1f} GFLOP/s, "
        f"bf16 {result['peaks']['bfloat16']:.1f} GFLOP/s" + probes_note(result.get("peak_probes", [])) + ".",
        "",
        f"Recipe: model `{result['model']}` ({result['parameters']['total']:,} parameters, N = "
        f"{result['parameters']['nonembedding']:,}), {result['train_examples']} GSM8K train chats, "
        f"{spec['steps']} optimizer steps of {spec['batch_size']} x {spec['grad_accum']} examples, lr "
        f"{spec['learning_rate']} {spec['scheduler']} with {spec['warmup_ratio']:.0%} warmup, "
        f"LoRA r {spec['lora']['r']} "
        f"alpha {spec['lora']['alpha']} dropout {spec['lora']['dropout']} on all linear layers, max length "
        f"{spec['max_length']} (longest example {result['longest_example']} tokens), loss on answers only; "
        f"{result['rounds']} rounds in alternation, each run in its own process. Validation: mean answer-token NLL on "
        f"{result['eval_examples']} GSM8K test chats, one shared function "
        f"(base model: {_f(result['base_eval_loss'], 4)}).",
        "", f"Model FLOPs: {result['flops_formula']}.", "",
        "| system | runs | supervised tok/s | tok/s | peak RSS MB" + (" | peak GPU MB" if gpu else "")
        + " | train loss | val loss | model FLOP/s | precision | of its peak | sup. tokens trained | settings |",
        "|---|---:|---:|---:|---:|" + ("---:|" if gpu else "") + "---:|---:|---:|---|---:|---:|---|",
    ]
    for s in result["systems"]:
        settings = {k: val for k, val in s["settings"].items() if k != "why"}
        lines.append(
            f"| {s['system']} | {s['runs']} | {_f(s['supervised_tokens_per_s'])} | {_f(s['tokens_per_s'])} "
            f"| {_f(s['peak_rss_mb'], 0)} " + (f"| {_f(s.get('peak_gpu_mb'), 0)} " if gpu else "") +
            f"| {_f(s['train_loss'], 4)} | {_f(s['eval_loss'], 4)} | {_f((s['model_tflops_per_s'] or 0) * 1e3)} G "
            f"| {s['precision']} | {_f(s['fraction_of_peak'], 3)} "
            f"| {s['supervised_tokens_trained']} | {', '.join(f'{k}={val}' for k, val in settings.items())} |")
    if any(result["targets"].values()):
        lines += ["", "| system | target | measured | target | met |", "|---|---|---|---|---|"]
        for system, targets in result["targets"].items():
            for name, t in targets.items():
                value = t["value"]
                shown = (", ".join(f"{k} {_f(x, 3)}" for k, x in value.items()) if isinstance(value, dict)
                         else _f(value, 2))
                lines.append(f"| {system} | {name} | {shown} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    for best in (s for s in result["systems"] if s["system"] in ("trl-best", "trl-liger")):
        lines += ["", f"{best['system']} settings and why:"] + [f"- {k}: {w}" for k, w in best["settings"]["why"].items()]
    if result.get("generation"):
        lines += ["", "Generation on the evaluation path (`bench/generate_speed.py`):", "",
                  "| batch size | examples/s | same texts as batch 1 |", "|---:|---:|---|"]
        lines += [f"| {g['batch_size']} | {g['examples_per_s']:.2f} | {g['same_texts_as_first']} |"
                  for g in result["generation"]["batches"]]
    if result.get("serve"):
        s = result["serve"]
        lines += ["", f"`lmtune serve` streamed chat ({s['model']}, {s['requests']} requests of {s['max_tokens']} "
                      f"tokens, temperature 0): first chunk {_f(s['first_chunk_s'] * 1e3)} ms, first token "
                      f"{_f(s['first_token_s'] * 1e3)} ms, mean between tokens {_f(s['mean_inter_chunk_s'] * 1e3)} ms "
                      f"(medians over requests)."]
    return "\n".join(lines) + "\n"

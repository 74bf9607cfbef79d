"""One AdamW step over the speed benchmark's LoRA tensors on this CPU: fused kernel vs foreach vs for-loop.

    python dev/probes/optimizer_step.py      # a few seconds

SmolLM2-135M with LoRA r16 on all linear layers has 30 layers x 7 adapted projections, each with an
A (16 x in) and a B (out x 16) matrix: 420 tensors, 4.9 M parameters, all with gradients. Prints the
median time of steps 6-30 for each implementation, twice in alternation.
"""

from __future__ import annotations

import statistics
import time

import torch

# SmolLM2-135M's projections (in, out): q, k, v, o, gate, up, down.
PROJECTIONS = [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)]


def lora_parameters(rank: int = 16, layers: int = 30) -> list[torch.nn.Parameter]:
    """Every adapter matrix of the benchmark's model, with a random gradient."""
    shapes = [shape for _ in range(layers) for d_in, d_out in PROJECTIONS for shape in ((rank, d_in), (d_out, rank))]
    params = [torch.nn.Parameter(torch.randn(shape) * 0.01) for shape in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def median_step_ms(implementation: str, steps: int = 30) -> float:
    """Median wall time of an AdamW step after 5 warm-up steps."""
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
    optimizer = torch.optim.AdamW(lora_parameters(), lr=1e-4, **options[implementation])
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[5:])


def main() -> None:
    """Print each implementation's median step time, two rounds."""
    params = lora_parameters()
    size = sum(p.numel() for p in params) / 1e6
    print(f"{len(params)} tensors, {size:.1f} M parameters, {torch.get_num_threads()} threads")
    for round_ in (1, 2):
        print(f"round {round_}: " + ", ".join(f"{name} {median_step_ms(name):.1f} ms"
                                              for name in ("fused", "foreach", "for-loop")))


if __name__ == "__main__":
    main()

"""Attention over packed rows on this machine: one block-diagonal masked call vs one causal call per example.

    python dev/probes/packed_attention.py                       # SmolLM2-135M's heads, two GSM8K-like rows, bf16
    python dev/probes/packed_attention.py --rows 100,100,100,100,100 --dtype float32

transformers gives a packed row (position ids restarting at 0) a block-diagonal causal mask and calls
SDPA once. A varlen-style alternative calls SDPA with `is_causal=True` on each example's slice, which
skips the masked blocks' work. Prints the median forward + backward time of one layer's attention for
both, and their largest difference (they compute the same thing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def masked(q, k, v, segments):
    """One SDPA call per micro-batch with the block-diagonal causal mask (transformers' packed path)."""
    t = q.shape[2]
    mask = (segments[:, :, None] == segments[:, None, :]) & torch.ones(t, t, dtype=torch.bool).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=True)


def per_example(q, k, v, rows):
    """One causal SDPA call per example (and per row's filler tail)."""
    out = []
    for b, lengths in enumerate(rows):
        parts, start = [], 0
        for n in lengths + [q.shape[2] - sum(lengths)]:
            if n:
                s = slice(start, start + n)
                parts.append(F.scaled_dot_product_attention(q[b:b + 1, :, s], k[b:b + 1, :, s], v[b:b + 1, :, s],
                                                            is_causal=True, enable_gqa=True))
            start += n
        out.append(torch.cat(parts, 2))
    return torch.cat(out, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["180,250,70", "300,190"], help="example lengths per row")
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    rows = [[int(n) for n in row.split(",")] for row in args.rows]
    width, dtype = max(sum(r) for r in rows), getattr(torch, args.dtype)
    segments = torch.zeros(len(rows), width, dtype=torch.long)
    for b, lengths in enumerate(rows):
        bounds = torch.tensor(lengths).cumsum(0)
        segments[b] = torch.bucketize(torch.arange(width), bounds, right=True)
    torch.manual_seed(0)
    shape = (len(rows), args.heads, width, args.head_dim)
    q = torch.randn(shape, dtype=dtype, requires_grad=True)
    k = torch.randn(shape[0], args.kv_heads, width, args.head_dim, dtype=dtype, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    grad = torch.randn(shape, dtype=dtype)
    calls = {"block-diagonal mask": lambda: masked(q, k, v, segments), "per example": lambda: per_example(q, k, v, rows)}
    diff = (calls["block-diagonal mask"]() - calls["per example"]()).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):  # interleaved, so machine drift hits both alike
        for name, call in calls.items():
            started = time.perf_counter()
            call().backward(grad)
            times[name].append((time.perf_counter() - started) * 1000)
    print(f"rows {args.rows}, {args.heads} heads ({args.kv_heads} kv) x {args.head_dim}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; largest difference {diff:.3g}")
    for name, ms in times.items():
        print(f"  {name:>20}: {statistics.median(ms):6.1f} ms forward + backward (median of {args.repeats})")


if __name__ == "__main__":
    main()

"""Where a LoRA training step's CPU time goes: torch.profiler over lmtune's loop on the peers recipe.

    python bench/profile_lora_step.py                          # lmtune's defaults
    python bench/profile_lora_step.py --frozen-dtype float32   # frozen weights kept in fp32
    python bench/profile_lora_step.py --peft-forward           # peft's LoRA forward, not FusedLoraLinear
    python bench/profile_lora_step.py --no-profile             # wall time only (the profiler slows small ops)
    python bench/profile_lora_step.py --no-profile --compile --steps 6   # training.compile: true
    python bench/profile_lora_step.py --batch-size 4 --max-seq-len 1024  # rows of ~1,000 tokens
    python bench/profile_lora_step.py --no-profile --steps 6 --threads 1  # one intra-op thread
    python bench/profile_lora_step.py --no-profile --steps 6 --attn eager # matmul + softmax attention

The recipe of `python -m bench.peers --steps 3 --batch-size 2 --grad-accum 4`: the built-in
SmolLM2-135M, the first 4 x batch size x steps GSM8K training chats, LoRA r16/alpha 32/dropout 0.05
on all linear layers, `--steps` optimizer steps (3) of `--batch-size` (2) x 4 chats, precision auto. Prints the wall time of `fit` (warm-up
step included), the median time of the steps after the first (compilation happens in the first),
the peak resident memory and the operators by self CPU time.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frozen-dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--peft-forward", action="store_true", help="undo fuse_lora_layers")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--compile", action="store_true", help="training.compile: true (regional torch.compile)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=2, help="chats per micro-batch (4 micro-batches a step)")
    parser.add_argument("--max-seq-len", type=int, default=512, help="data.max_seq_len: the packed rows' length")
    parser.add_argument("--threads", type=int, default=None, help="training.num_threads (default: torch's, one per core)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="model.attn_implementation")
    parser.add_argument("--rows", type=int, default=20, help="operators to print")
    args = parser.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from bench.peers.common import gsm8k_chats, write_chats
    from lmtune.config import RunConfig
    from lmtune.data.encode import encode_example
    from lmtune.data.formats import load_examples
    from lmtune.model.adapters import apply_peft
    from lmtune.model.load import load_model
    from lmtune.model.lora_speed import FusedLoraLinear, LoraLinear
    from lmtune.train.loop import fit
    from lmtune.train.methods import build_objective

    work = Path(tempfile.mkdtemp(prefix="lmtune-profile-"))
    chats = write_chats(gsm8k_chats("train", 0, 4 * args.batch_size * args.steps), work / "train.jsonl")
    cfg = RunConfig.model_validate({
        "model": {"attn_implementation": args.attn},
        "data": {"max_seq_len": args.max_seq_len},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "training": {"batch_size": args.batch_size, "grad_accum": 4, "max_steps": args.steps, "compile": args.compile, "learning_rate": 2e-4, "num_threads": args.threads,
                     "frozen_dtype": args.frozen_dtype, "progress_bar": False, "eval_every": 10**9, "save_every": 10**9},
        "eval": {"at_end": False},
    })
    examples, _, _ = load_examples(str(chats))
    model, tokenizer = load_model(cfg.model)
    encoded = [encode_example(e, tokenizer, cfg.data) for e in examples]
    model = apply_peft(model, cfg.method, cfg.lora)
    if args.peft_forward:
        for module in model.modules():
            if type(module) is FusedLoraLinear:
                module.__class__ = LoraLinear
    with nullcontext() if args.no_profile else profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        ends: list[float] = []
        fit(model, encoded, [], build_objective(cfg, tokenizer), cfg.training, work / "run",
            on_step=lambda step, record: record["kind"] == "train" and ends.append(time.perf_counter()))
        seconds = time.perf_counter() - started
    frozen = next(p.dtype for p in model.parameters() if not p.requires_grad)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
    step_times = [b - a for a, b in zip([started] + ends, ends)]
    later = sorted(step_times[1:])
    median = f"{later[len(later) // 2]:.2f} s" if later else "n/a"
    print("step times:", [round(t, 2) for t in step_times])
    print(f"fit: {seconds:.1f} s for {args.steps} steps (first {step_times[0]:.1f} s, later steps median {median}), "
          f"peak RSS {peak_gb:.2f} GB (frozen weights {frozen}, {'peft' if args.peft_forward else 'fused'} LoRA "
          f"forward{', compiled blocks' if args.compile else ''})")
    if not args.no_profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=45))

if __name__ == "__main__":
    main()

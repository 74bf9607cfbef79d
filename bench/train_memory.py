"""Resident memory of lmtune's training loop by phase: imports, weights touched, optimizer steps.

    python -m bench.train_memory                                    # the four settings, each in its own process
    python -m bench.train_memory --checkpointing on --release off   # one setting, in this process
    python -m bench.train_memory --chunked-loss off                 # the four, with the full-logits loss

SmolLM2-135M-Instruct, LoRA r16 on all linear layers (lmtune's defaults), 2 optimizer steps of 2
chats taken from the 4 longest of the first 40 GSM8K training chats, packed rows of at most 512
tokens. Prints the current resident set (/proc/self/statm) and its peak (ru_maxrss) after each phase,
with and without gradient checkpointing, and with and without `training.release_freed_memory`
(`training.chunked_loss` as `--chunked-loss` says, on by default like lmtune's).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.peers.common import ROOT, gsm8k_chats, write_chats


def rss() -> str:
    """Current and peak resident memory of this process."""
    current = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    return f"current {current:,.0f} MB, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"


def measure(checkpointing: bool, release: bool, chunked_loss: bool = True) -> None:
    """Train 2 steps and print the memory after each phase."""
    import torch

    from lmtune.config import RunConfig
    from lmtune.data.encode import encode_example
    from lmtune.data.formats import load_examples
    from lmtune.model.adapters import apply_peft
    from lmtune.model.load import load_model
    from lmtune.train.loop import fit
    from lmtune.train.methods import build_objective

    print(f"gradient checkpointing {'on' if checkpointing else 'off'}, "
          f"release_freed_memory {'on' if release else 'off'}, chunked_loss {'on' if chunked_loss else 'off'}", flush=True)
    print(f"  after imports: {rss()}", flush=True)
    cfg = RunConfig.model_validate({
        "data": {"max_seq_len": 512},
        "training": {"batch_size": 2, "max_steps": 2, "gradient_checkpointing": checkpointing,
                     "release_freed_memory": release, "chunked_loss": chunked_loss,
                     "progress_bar": False, "eval_every": 10**9, "save_every": 10**9},
        "eval": {"at_end": False},
    })
    longest = sorted(gsm8k_chats("train", 0, 40), key=lambda chat: -sum(len(m["content"]) for m in chat))[:4]
    with tempfile.TemporaryDirectory() as tmp:
        examples, _, _ = load_examples(write_chats(longest, Path(tmp) / "chats.jsonl"))
        model, tokenizer = load_model(cfg.model)
        encoded = [encode_example(e, tokenizer, cfg.data) for e in examples]
        model = apply_peft(model, cfg.method, cfg.lora)
        with torch.no_grad():
            model(input_ids=torch.tensor([encoded[0].input_ids]))
        print(f"  weights touched (one forward pass): {rss()}; chats of {[len(e.input_ids) for e in encoded]} tokens",
              flush=True)
        fit(model, encoded, [], build_objective(cfg, tokenizer), cfg.training, Path(tmp) / "run",
            on_step=lambda step, record: record["kind"] == "train" and print(f"  after optimizer step {step}: {rss()}", flush=True))


def main() -> None:
    """Measure one setting here, or all four, each in its own process so each peak is its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpointing", choices=["on", "off"])
    parser.add_argument("--release", choices=["on", "off"])
    parser.add_argument("--chunked-loss", choices=["on", "off"], default="on")
    args = parser.parse_args()
    if args.checkpointing and args.release:
        measure(args.checkpointing == "on", args.release == "on", args.chunked_loss == "on")
        return
    for checkpointing in ("on", "off"):
        for release in ("on", "off"):
            subprocess.run([sys.executable, "-m", "bench.train_memory", "--checkpointing", checkpointing,
                            "--release", release, "--chunked-loss", args.chunked_loss], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()

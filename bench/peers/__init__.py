"""lmtune against what users would otherwise run: HF Trainer + peft, TRL SFTTrainer (defaults and best), lmtune.

    python -m bench.peers --rounds 3 --single-round trl-default   # the full comparison (~2 h on the 2-core CPU)
    python -m bench.peers --smoke                  # 2 steps of 2 examples, one thread: checks the harness end to end
    python -m bench.peers --device cuda --model-config llama-1b --batch-size 16 --grad-accum 1 --steps 30  # GPU

Modules: common (spec, data, counting), hf_trainer, trl_sft, lmtune_fit (one per system), worker (the
subprocess entry point), evaluate (the one shared validation loss), machine (matmul peaks, description),
serve_latency (chat endpoint), report (tables), __main__ (the driver).
"""

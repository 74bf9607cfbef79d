"""System 1: Hugging Face `Trainer` + `peft`, as its documentation teaches it.

    python -m bench.peers.worker train hf-trainer SPEC.json      # normally started by the driver

The user tokenises each chat with the tokenizer's chat template, masks the prompt with -100 and
pads batches with DataCollatorForSeq2Seq; everything else is TrainingArguments' defaults (fp32 on a
CPU without native bf16, no gradient checkpointing, AdamW), with the shared learning rate, schedule,
batch and step count.
"""

from __future__ import annotations

import time
from typing import Any

from bench.peers.common import (
    IGNORE,
    CountingCollator,
    Spec,
    StepClock,
    lora_settings,
    native_bf16,
    peak_memory,
    per_step,
    prompt_completion_ids,
    read_chats,
    throughput,
)


def trainer_callback(clock: StepClock, losses: list[float]) -> Any:
    """A TrainerCallback that ticks the clock at every optimizer step's end and keeps the logged losses."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    return Probe()


def shared_arguments(spec: Spec) -> dict[str, Any]:
    """TrainingArguments every Trainer-based system gets: the shared recipe and quiet bookkeeping."""
    return {
        "output_dir": spec.out_dir,
        "per_device_train_batch_size": spec.batch_size,
        "gradient_accumulation_steps": spec.grad_accum,
        "learning_rate": spec.learning_rate,
        "max_steps": spec.steps,
        "lr_scheduler_type": spec.scheduler,
        "warmup_steps": spec.warmup_ratio,  # a float below 1 is a ratio; rounded up like lmtune's
        "seed": spec.seed,
        "logging_steps": 1,  # per-step losses; no computation changes
        "save_strategy": "no",  # the adapter is saved once after training, by every system alike
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": spec.device == "cpu",
    }


def finish(trainer: Any, spec: Spec, clock: StepClock, counter: CountingCollator, losses: list[float],
           started: float, first_step_at: float) -> dict[str, Any]:
    """The run's record: throughput, memory, losses; saves the adapter to out_dir/adapter."""
    record = {**throughput(clock.times, per_step(counter.counts, spec.grad_accum)), **peak_memory(spec.device)}
    record.update(train_loss=losses[-1] if losses else None, train_losses=losses,
                  setup_seconds=first_step_at - started, wall_seconds=time.perf_counter() - started)
    trainer.model.save_pretrained(f"{spec.out_dir}/adapter")
    return record


def run(spec: Spec) -> dict[str, Any]:
    """Train with HF Trainer and return the run's record."""
    started = time.perf_counter()
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(spec.source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec.source)  # Trainer moves it to the GPU when there is one
    model = get_peft_model(model, LoraConfig(**lora_settings(spec)))

    def tokenize(row: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = prompt_completion_ids(tokenizer, row["messages"])
        ids = (prompt + completion)[: spec.max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids),
                "labels": ([IGNORE] * len(prompt) + completion)[: spec.max_length]}

    data = Dataset.from_list([{"messages": c} for c in read_chats(spec.train_file)])
    data = data.map(tokenize, remove_columns=["messages"])
    counter = CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE))
    bf16 = native_bf16(spec.device)
    args = TrainingArguments(**shared_arguments(spec), bf16=bf16)
    clock, losses = StepClock(), []
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counter,
                      callbacks=[trainer_callback(clock, losses)])
    first_step_at = time.perf_counter()
    trainer.train()
    record = finish(trainer, spec, clock, counter, losses, started, first_step_at)
    record["settings"] = {"bf16": bf16, "gradient_checkpointing": False, "padding": "DataCollatorForSeq2Seq",
                          "optim": getattr(args.optim, "value", str(args.optim)), "sampler": "random"}
    return record

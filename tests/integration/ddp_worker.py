"""Run by test_ddp.py, alone or under `accelerate launch`: trains the tiny model, writes the losses."""

import json
import os
import sys
from pathlib import Path

from lmtune.config import DataConfig, TrainingConfig
from lmtune.data.encode import encode_example
from lmtune.data.records import Example, Message
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm
from lmtune.train.hardware import end_distributed
from lmtune.train.loop import fit
from lmtune.train.sft import SftObjective

out, batch_size, grad_accum = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tok = byte_tokenizer()
pairs = [(f"Question number {i}?", f"Answer {i * 7 % 13}.") for i in range(16)]
data = [
    encode_example(Example(kind="chat", messages=[Message("user", q), Message("assistant", a)]), tok,
                   DataConfig(template="chatml"))
    for q, a in pairs
]
cfg = TrainingConfig(
    precision="fp32", progress_bar=False, batch_size=batch_size, grad_accum=grad_accum, max_steps=4,
    learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler="constant", early_stopping={"patience": None},
)
result = fit(tiny_causal_lm(vocab_size=len(tok)), data, data[:6], SftObjective(True, 0), cfg, out.parent / "run")
world = int(os.environ.get("WORLD_SIZE", "1"))
assert world == (2 if grad_accum == 1 else 1), "accelerate did not start the expected number of processes"
if int(os.environ.get("RANK", "0")) == 0:
    out.write_text(json.dumps({"losses": result.train_losses, "eval": result.evals[-1]["eval_loss"]}))
end_distributed()  # as `lmtune train` does

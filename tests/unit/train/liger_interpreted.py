"""Liger's kernels on the CPU through Triton's interpreter (run by test_kernels.py with TRITON_INTERPRET=1).

Prints, as one JSON line, the plain path against Liger's RoPE and fused linear cross-entropy for one
packed batch of a tiny Llama with LoRA (loss per token, token hits, gradients), and the fused loss
alone on logits whose argmax hits half the targets. Liger's RMSNorm and SwiGLU kernels stop in
Triton 3.9's interpreter (a scalar `.to` it does not model), so they are left out here.
"""

from __future__ import annotations

import json

import torch
from peft import LoraConfig, get_peft_model

from lmtune.config import DataConfig
from lmtune.data.collate import pack_collate
from lmtune.data.encode import encode_example
from lmtune.data.records import Example, Message
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm
from lmtune.train.chunked_loss import linear_cross_entropy
from lmtune.train.kernels import LIGER_PATCHES, liger_kernels, liger_linear_cross_entropy
from lmtune.train.sft import causal_lm_loss


def main() -> None:
    tokenizer = byte_tokenizer()
    chats = [("Two plus two?", "Four."), ("Capital of France?", "Paris."), ("Largest planet?", "Jupiter.")]
    examples = [Example(kind="chat", messages=[Message("user", q), Message("assistant", a)]) for q, a in chats]
    batch = pack_collate([encode_example(e, tokenizer, DataConfig(template="chatml")) for e in examples])
    torch.manual_seed(0)
    model = get_peft_model(tiny_causal_lm({}, seed=0, vocab_size=len(tokenizer)),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                      init_lora_weights=False))  # non-zero adapters: their gradients all flow

    def run(liger: bool):
        model.zero_grad()
        with liger_kernels(model, liger, {**LIGER_PATCHES, "rms_norm": False, "swiglu": False}):
            head_loss = {"head_loss": liger_linear_cross_entropy} if liger else {}
            loss, sums = causal_lm_loss(model, batch, **head_loss)
            loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.item() / batch["n_tokens"], int(sums["n_correct"]), grads

    plain, liger = run(False), run(True)
    hidden, weight = torch.randn(40, 16), torch.randn(50, 16)
    targets = torch.randint(0, 50, (40,))
    targets[::2] = (hidden @ weight.T).argmax(-1)[::2]
    fused = [fn(hidden, weight, None, targets) for fn in (linear_cross_entropy, liger_linear_cross_entropy)]
    print(json.dumps({
        "head_loss": [loss.item() for loss, _ in fused],
        "head_correct": [int(correct) for _, correct in fused],
        "loss": [plain[0], liger[0]],
        "correct": [plain[1], liger[1]],
        "max_grad_diff": max((plain[2][n] - liger[2][n]).abs().max().item() for n in plain[2]),
        "max_grad": max(g.abs().max().item() for g in plain[2].values()),
        "n_grads": len(plain[2]),
    }))


if __name__ == "__main__":
    main()

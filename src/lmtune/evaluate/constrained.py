"""Label-constrained scoring: a causal LM's answer is the label whose continuation is most likely.

Usage:
    conts = label_continuations(tokenizer, cfg, label_names)        # each label as trained: "joy<|im_end|>"
    logp = label_logprobs(model, tokenizer, prompts, conts)          # [n, k] summed log-probabilities
    scores = score_constrained(model, tokenizer, test, cfg, label_names, shots, calibrate=True)

Instead of generating an answer and parsing a label out of it (which fails when the model starts
"The tweet expresses a"), every label's continuation is scored after the prompt and the most likely
label is the answer: the answer is always a label. The token prefix shared by all prompts (system
prompt, k-shot examples) runs once; each batch then runs its prompts' own tokens once with the KV
cache, and all labels of every prompt in one more pass over the cached prompts, one row per prompt
with a mask that keeps the labels apart (the prompt is shared, never recomputed or copied per label). A label's continuation is its text plus the end-of-turn token, exactly
the tokens the fine-tuned model is trained on, so a label that is a prefix of another ("joy" and
"joyful") is told apart.

Contextual calibration (Zhao et al., 2021, "Calibrate before use"): the same prompt with a
content-free text ("N/A") in place of the example gives the prompt's own preference p_cf over the
labels; dividing each example's label probabilities by p_cf removes that bias.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lmtune.config import RunConfig
from lmtune.data.encode import label_chat, with_system
from lmtune.data.records import Example
from lmtune.data.templates import render_chunks
from lmtune.evaluate.compare import label_scores, prompt_and_reference
from lmtune.model.generate import left_pad


@dataclass(frozen=True)
class PromptChoice:
    """One prompt of the constrained baselines: an instruction, its shots, and whether it is calibrated."""

    instruction: str | None
    shots: tuple[Example, ...]
    calibrated: bool

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (the instruction as given; None means the run's own)."""
        return {"instruction": self.instruction, "k": len(self.shots), "calibrated": self.calibrated}


def label_continuations(tokenizer, cfg: RunConfig, label_names: list[str]) -> list[list[int]]:
    """Token ids of each label's answer as training renders it (label text + end-of-turn)."""
    out = []
    for name in label_names:
        messages = with_system(label_chat(Example("labelled", text="x", label=name), cfg.data, label_names),
                               cfg.data.system_prompt)
        answer = [c for c in render_chunks(messages, cfg.data.template, tokenizer) if c.trainable]
        if not answer:
            raise ValueError(f"the template renders no answer for label {name!r}")
        ids = tokenizer(answer[-1].text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"label {name!r} has no tokens")
        out.append(ids)
    return out


@torch.inference_mode()
def label_logprobs(model, tokenizer, prompts: list[str], continuations: list[list[int]], batch_size: int = 16,
                   desc: str | None = None) -> np.ndarray:
    """Summed log-probability of every continuation after every prompt, [n_prompts, n_labels], prompt order.

    The token prefix that all prompts share (system prompt, k-shot examples, the instruction's start) is
    run once and its KV cache reused by every batch, so a k-shot prompt costs about what a zero-shot one does.
    """
    if not continuations or not all(continuations):
        raise ValueError("every label needs a non-empty continuation")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else continuations[0][0]
    k, width = len(continuations), max(len(c) for c in continuations)
    cont = torch.full((k, width), pad_id, dtype=torch.long)
    cont_mask = torch.zeros((k, width), dtype=torch.long)
    for i, ids in enumerate(continuations):
        cont[i, : len(ids)], cont_mask[i, : len(ids)] = torch.tensor(ids), 1
    cont, cont_mask = cont.to(device), cont_mask.to(device)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(not ids for ids in encoded):
        raise ValueError("an empty prompt has nothing to continue")
    result = np.zeros((len(prompts), k), dtype=np.float64)
    if not prompts:
        return result
    was_training = model.training
    model.eval()
    shared = shared_prefix_length(encoded)
    prefix = None
    if shared:
        out = model(input_ids=torch.tensor([encoded[0][:shared]], device=device), use_cache=True, logits_to_keep=1)
        prefix = _cache_of(out)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # similar lengths, little padding
    bar = tqdm(total=len(prompts), desc=desc, unit="ex", disable=desc is None, dynamic_ncols=True)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            suffixes = [encoded[i][shared:] for i in rows]
            result[rows] = _batch_logprobs(model, suffixes, prefix, shared, cont, cont_mask, pad_id)
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    return result


def shared_prefix_length(encoded: list[list[int]]) -> int:
    """Tokens at the start of every prompt, leaving each prompt at least one token of its own."""
    shortest = min(len(ids) for ids in encoded)
    n = 0
    while n < shortest - 1 and all(ids[n] == encoded[0][n] for ids in encoded):
        n += 1
    return n


def _cache_of(out):
    # transformers 5.25 renamed the output's past_key_values to cache (the old name is deprecated).
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _cache_kwarg(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _batch_logprobs(model, suffixes: list[list[int]], prefix, shared: int, cont: torch.Tensor,
                    cont_mask: torch.Tensor, pad_id: int) -> np.ndarray:
    """[len(suffixes), k] log-probabilities: the prompts once (after the cached shared prefix), then every
    label after each prompt in one more pass over their cache (_label_rest)."""
    device = cont.device
    k, width = cont.shape
    b = len(suffixes)
    name = _cache_kwarg(model)
    # Left padding sits between the shared prefix and each prompt's own tokens: masked out, and the
    # positions count only real tokens, so every row sees exactly its prompt.
    ids, mask = left_pad(suffixes, pad_id, device)
    positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
    cache = None
    if prefix is not None:
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(b)
        mask = torch.cat([torch.ones((b, shared), dtype=mask.dtype, device=device), mask], dim=1)
    # Only the last position's logits are needed: the output head over every prompt token would cost a
    # fifth of the pass (49k-word vocabulary against a 576-wide model).
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{name: cache})
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # the label's first token follows the prompt
    logp = first[:, cont[:, 0]]  # [b, k]
    if width > 1:
        logp = logp + _label_rest(model, _cache_of(out), mask, positions[:, -1], cont, cont_mask, name)
    return logp.double().cpu().numpy()


def _label_rest(model, cache, mask: torch.Tensor, last_pos: torch.Tensor, cont: torch.Tensor,
                cont_mask: torch.Tensor, name: str) -> torch.Tensor:
    """[b, k] log-probabilities of every label's tokens after the first, all labels in one row per prompt.

    Each prompt's row continues with label 0's tokens, then label 1's, ...; a mask lets every label token
    see the prompt and its own label's earlier tokens only, and positions restart after the prompt for
    each label, so each label is scored as if it were alone. Repeating the prompt's cache once per label
    instead (k rows per prompt) made this pass cost as much as the prompt itself with a k-shot prefix.
    A label's last token is only predicted, never fed: tokens 0..width-2 go in.
    """
    device = cont.device
    b = mask.shape[0]
    k, width = cont.shape
    fed = width - 1
    ids = cont[:, :-1].reshape(1, k * fed).expand(b, -1)
    offsets = torch.arange(fed, device=device).repeat(k)  # token t of each label
    positions = last_pos[:, None] + 1 + offsets[None, :]
    label_of = torch.arange(k, device=device).repeat_interleave(fed)
    own = (label_of[:, None] == label_of[None, :]) & (offsets[None, :] <= offsets[:, None])  # [k*fed, k*fed]
    allowed = torch.cat([mask.bool()[:, None, :].expand(b, k * fed, -1), own[None].expand(b, -1, -1)], dim=2)
    # An additive float mask works with every attention kernel (sdpa, eager); a bool one only with some.
    dtype = next(model.parameters()).dtype
    additive = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    logits = model(input_ids=ids, attention_mask=additive[:, None], position_ids=positions, use_cache=True,
                   **{name: cache}).logits.float()
    targets = cont[:, 1:].reshape(1, k * fed, 1).expand(b, -1, -1)
    rest = torch.log_softmax(logits, dim=-1).gather(-1, targets)[..., 0]
    weights = cont_mask[:, 1:].reshape(1, k * fed).to(rest.dtype)  # padding after short labels adds nothing
    return (rest * weights).view(b, k, fed).sum(-1)


def _normalised(logp: np.ndarray) -> np.ndarray:
    """Log-probabilities renormalised over the labels (a softmax per row)."""
    return logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)


def calibrated(logp: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration: log p(label | x) - log p_cf(label), p_cf averaged over content-free inputs."""
    p_cf = np.exp(_normalised(content_free)).mean(axis=0)
    return _normalised(logp) - np.log(p_cf)


def prompts_for(examples: Sequence[Example], tokenizer, cfg: RunConfig, label_names: list[str],
                choice: PromptChoice) -> list[str]:
    """The rendered prompt of each example under a prompt choice (its instruction and shots)."""
    data = cfg.data if choice.instruction is None else cfg.data.model_copy(update={"instruction": choice.instruction})
    run = cfg.model_copy(update={"data": data})
    return [prompt_and_reference(e, run, tokenizer, label_names, choice.shots)[0] for e in examples]


def choice_logprobs(model, tokenizer, examples: Sequence[Example], cfg: RunConfig, label_names: list[str],
                    choice: PromptChoice, desc: str | None = None) -> np.ndarray:
    """[n, k] label scores of the examples under a prompt choice, calibrated when the choice says so."""
    conts = label_continuations(tokenizer, cfg, label_names)
    logp = label_logprobs(model, tokenizer, prompts_for(examples, tokenizer, cfg, label_names, choice), conts,
                          cfg.eval.batch_size, desc)
    if not choice.calibrated:
        return logp
    free = [Example("labelled", text=t, label=label_names[0]) for t in cfg.eval.content_free]
    return calibrated(logp, label_logprobs(model, tokenizer, prompts_for(free, tokenizer, cfg, label_names, choice),
                                           conts, cfg.eval.batch_size))


def scores_from_logprobs(logp: np.ndarray, examples: Sequence[Example], label_names: list[str], cfg: RunConfig,
                         seconds: float, choice: PromptChoice) -> dict[str, Any]:
    """Metrics (as generated answers get them) of the argmax labels, with each example's label scores."""
    predicted = [label_names[i] for i in logp.argmax(axis=1)]
    references = [e.label for e in examples]
    scores: dict[str, Any] = {"n": len(examples), "scoring": "constrained", "prompt": choice.describe(),
                              "seconds": seconds, "examples_per_s": len(examples) / max(seconds, 1e-9)}
    scores.update(label_scores(predicted, references, label_names, cfg))
    scores["predictions"] = [
        {"prompt": e.text, "reference": e.label, "output": p, "parsed": p,
         "label_scores": {n: round(float(x), 4) for n, x in zip(label_names, row)}}
        for e, p, row in zip(examples, predicted, logp)
    ]
    return scores


def score_constrained(model, tokenizer, examples: Sequence[Example], cfg: RunConfig, label_names: list[str],
                      choice: PromptChoice, desc: str | None = None) -> dict[str, Any]:
    """Constrained-scoring metrics of labelled examples under one prompt choice."""
    started = time.perf_counter()
    logp = choice_logprobs(model, tokenizer, examples, cfg, label_names, choice, desc)
    return scores_from_logprobs(logp, examples, label_names, cfg, time.perf_counter() - started, choice)

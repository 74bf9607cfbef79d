"""Label-constrained scoring on a tiny random Llama: exact log-likelihoods, calibration, prompt search."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmtune.config import RunConfig
from lmtune.data.encode import encode_example
from lmtune.data.records import Example
from lmtune.evaluate.constrained import (PromptChoice, calibrated, label_continuations, label_logprobs,
                                        score_constrained, shared_prefix_length)
from lmtune.evaluate.prompt_search import constrained_baselines, search_prompt
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm

LABELS = ["anger", "joy", "joyful", "sadness"]  # "joy" is a prefix of "joyful": the end-of-turn tells them apart


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_causal_lm(vocab_size=len(tok), seed=3)


def cfg(**eval_cfg) -> RunConfig:
    return RunConfig.model_validate({"data": {"template": "chatml", "instruction": "Emotion of: {text}"},
                                     "eval": {"batch_size": 3, **eval_cfg}})


def labelled(i: int, label: str) -> Example:
    return Example(kind="labelled", text=f"tweet {i} " + "word " * (i % 5), label=label, line=i)


def brute_force(model, tok, prompt: str, continuation: list[int]) -> float:
    """log p(continuation | prompt) from one plain forward pass over prompt + continuation."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    full = torch.tensor([ids + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=full).logits[0].float(), dim=-1)
    return sum(logp[len(ids) - 1 + j, t].item() for j, t in enumerate(continuation))


def test_continuations_are_the_trained_answer_tokens(tok):
    run = cfg()
    conts = label_continuations(tok, run, LABELS)
    for name, ids in zip(LABELS, conts):
        data = run.data.model_copy(update={"label_names": LABELS})
        enc = encode_example(Example("labelled", text="x", label=name), tok, data)
        trained = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != -100]
        assert ids == trained  # the label's text and its end-of-turn, exactly what fine-tuning learns
    assert conts[1] != conts[2][: len(conts[1])]


def test_shared_prompt_scores_equal_one_forward_pass_per_label(model, tok):
    prompts = ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "a much longer prompt " * 4, "x"]
    conts = label_continuations(tok, cfg(), LABELS)
    fast = label_logprobs(model, tok, prompts, conts, batch_size=2)
    slow = np.array([[brute_force(model, tok, p, c) for c in conts] for p in prompts])
    assert fast.shape == (3, 4)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)
    # Which prompts share a batch (and their left padding) does not change the scores.
    np.testing.assert_allclose(label_logprobs(model, tok, prompts, conts, batch_size=1), fast, rtol=1e-4, atol=1e-4)


def test_calibration_removes_the_prompt_bias():
    # The prompt alone prefers label 0 by a factor of 4; the examples lean the other way by less.
    logp = np.log(np.array([[0.6, 0.4], [0.7, 0.3], [0.45, 0.55]]))
    content_free = np.log(np.array([[0.8, 0.2]]))
    assert list(logp.argmax(1)) == [0, 0, 1]
    assert list(calibrated(logp, content_free).argmax(1)) == [1, 1, 1]
    # A content-free input without preference changes nothing.
    np.testing.assert_allclose(calibrated(logp, np.log([[0.5, 0.5]])), logp - np.log(0.5))


def test_constrained_answers_are_always_labels(model, tok):
    examples = [labelled(i, LABELS[i % 4]) for i in range(10)]
    run = cfg()
    scores = score_constrained(model, tok, examples, run, LABELS, PromptChoice(None, (), True))
    assert scores["n_unparsed"] == 0 and scores["n"] == 10
    assert {p["parsed"] for p in scores["predictions"]} <= set(LABELS)
    assert scores["prompt"] == {"instruction": None, "k": 0, "calibrated": True}
    raw = score_constrained(model, tok, examples, run, LABELS, PromptChoice(None, (), False))
    for p in raw["predictions"]:  # uncalibrated: the answer is the most likely label
        assert p["parsed"] == max(p["label_scores"], key=p["label_scores"].get)


def data_of(n_train=8, n_val=6, n_test=5):
    return SimpleNamespace(label_names=LABELS, examples={
        "train": [labelled(i, LABELS[i % 4]) for i in range(n_train)],
        "validation": [labelled(100 + i, LABELS[i % 4]) for i in range(n_val)],
        "test": [labelled(200 + i, LABELS[i % 4]) for i in range(n_test)]})


def test_search_tries_every_prompt_and_keeps_the_best_on_validation(model, tok):
    run = cfg(search_instructions=["Which one? {labels}\n{text}"], search_shots=[0, 2])
    best, rows = search_prompt(model, tok, data_of(), run, echo=lambda _: None)
    assert len(rows) == 2 * 2 * 2  # instructions x shots x calibrated or not
    assert {(r["instruction"], r["k"], r["calibrated"]) for r in rows} == {
        (i, k, c) for i in (None, "Which one? {labels}\n{text}") for k in (0, 2) for c in (False, True)}
    top = max(r["validation"] for r in rows)
    first_top = next(r for r in rows if r["validation"] == top)
    assert best.describe() == {k: first_top[k] for k in ("instruction", "k", "calibrated")}


def test_constrained_baselines_report_zero_shot_k_shot_and_searched_on_test(model, tok):
    run = cfg(few_shot=2, search_instructions=["Which one? {labels}\n{text}"], search_shots=[0, 2])
    systems = constrained_baselines(model, tok, data_of(), "test", run, echo=lambda _: None)
    assert list(systems) == ["base zero-shot, constrained", "base 2-shot, constrained", "base searched, constrained"]
    searched = systems["base searched, constrained"]
    assert searched["n"] == 5 and searched["search"]["split"] == "validation"
    assert searched["prompt"] == searched["search"]["best"]
    off = cfg(few_shot=2, prompt_search=False)
    assert list(constrained_baselines(model, tok, data_of(), "test", off, echo=lambda _: None)) == [
        "base zero-shot, constrained", "base 2-shot, constrained"]
    # Unlabelled or chat data has no label set to constrain to.
    assert constrained_baselines(model, tok, SimpleNamespace(label_names=None, examples={"test": []}), "test", run) == {}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_shared_prefix_is_computed_once_and_changes_nothing(tok, attention):
    model = tiny_causal_lm({"attn_implementation": attention}, vocab_size=len(tok), seed=3)
    assert model.config._attn_implementation == attention
    shots = "<|im_start|>user\nshot one<|im_end|>\n<|im_start|>assistant\njoy<|im_end|>\n"
    prompts = [shots + f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n" for t in ("a", "bb bb", "c c c c")]
    conts = label_continuations(tok, cfg(), LABELS)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert shared_prefix_length(ids) >= len(tok(shots, add_special_tokens=False)["input_ids"])
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each prompt keeps a token of its own
    fast = label_logprobs(model, tok, prompts, conts, batch_size=2)
    slow = np.array([[brute_force(model, tok, p, c) for c in conts] for p in prompts])
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)

"""Dynamic batching and shared bases (serve/batching.py, serve/inference.py) on tiny-llama and real adapters.

Greedy answers must not depend on what a request was batched with; LoRA models of one base share its
weights in memory; the base itself is served with the adapters off.
"""

from __future__ import annotations

import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lmtune.config import ModelConfig, RunConfig
from lmtune.model.generate import generate
from lmtune.model.export import load_trained, save_model
from lmtune.model.load import load_model
from lmtune.serve.batching import Batcher
from lmtune.serve.inference import Loaded, StreamEnd

TINY = ModelConfig(name="tiny-llama")
# Prompts of different lengths, so that batched rows are left-padded.
PROMPTS = ["<|im_start|>user\n" + "why " * k + "?<|im_end|>\n<|im_start|>assistant\n" for k in range(1, 9)]
OPTS = dict(max_new_tokens=10, temperature=0.0, top_p=1.0, stop=[], seed=0)


def _together(loaded: Loaded, prompts: list[str], **opts) -> list:
    """complete() for each prompt from its own thread, all released at once (as concurrent requests)."""
    barrier = threading.Barrier(len(prompts))
    out: list = [None] * len(prompts)

    def one(i: int) -> None:
        barrier.wait()
        out[i] = loaded.complete([prompts[i]], **{**OPTS, **opts})[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two saved LoRA adapters of tiny-llama with random (non-zero) weights, so they change the answers."""
    root = tmp_path_factory.mktemp("adapters")
    paths = []
    for seed in (1, 2):
        model, tokenizer = load_model(TINY)
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
        paths.append(save_model(peft, tokenizer, root / f"a{seed}"))
    return paths


def test_a_batched_greedy_answer_equals_the_single_one_and_evals():
    model, tokenizer = load_model(TINY)
    loaded = Loaded(Batcher(model.eval(), window_s=0.2), tokenizer, RunConfig())
    alone = [loaded.complete([p], **OPTS)[0] for p in PROMPTS]
    batches_before = loaded.batcher.batches
    together = _together(loaded, PROMPTS)
    assert loaded.batcher.batches - batches_before < len(PROMPTS)  # they really shared batches
    assert [g.text for g in together] == [g.text for g in alone]
    assert [(g.n_new_tokens, g.finish_reason) for g in together] == [(g.n_new_tokens, g.finish_reason) for g in alone]
    evaluated = generate(model, tokenizer, PROMPTS, max_new_tokens=10)  # lmtune eval's generation
    assert [g.text for g in together] == [g.text for g in evaluated]


def test_streaming_gives_the_text_of_complete_and_per_row_limits():
    model, tokenizer = load_model(TINY)
    loaded = Loaded(Batcher(model.eval()), tokenizer, RunConfig())
    for prompt in PROMPTS[:3]:
        pieces = list(loaded.stream(prompt, **OPTS))
        end = pieces[-1]
        assert isinstance(end, StreamEnd)
        full = loaded.complete([prompt], **OPTS)[0]
        assert "".join(pieces[:-1]) == full.text and end.completion_tokens == full.n_new_tokens
    short, long = _together(loaded, PROMPTS[:2], max_new_tokens=3), _together(loaded, PROMPTS[:2], max_new_tokens=9)
    assert [g.n_new_tokens for g in short] == [3, 3] and all(g.finish_reason == "length" for g in short)
    assert [g.text[:len(s.text)] for g, s in zip(long, short)] == [s.text for s in short]


def test_adapters_share_one_base_and_answer_like_their_own_model(adapters):
    model, tokenizer = load_model(TINY)
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    alone_base = generate(model, tokenizer, PROMPTS, max_new_tokens=10)
    batcher = Batcher(model.eval(), window_s=0.2)
    loaded = [Loaded(batcher, tokenizer, RunConfig(), f"ad{i}", path) for i, path in enumerate(adapters)]
    for one in loaded:
        batcher.attach(one.adapter, one.adapter_path)
    base = Loaded(batcher, tokenizer, RunConfig())

    # Memory: one base, plus the adapter matrices only.
    storages = {p.untyped_storage().data_ptr(): p.numel() * p.element_size() for p in batcher.model.parameters()}
    lora_bytes = sum(p.numel() * p.element_size() for n, p in batcher.model.named_parameters() if "lora_" in n)
    assert sum(storages.values()) == base_bytes + lora_bytes

    expected = [[g.text for g in generate(load_trained(p)[0], tokenizer, PROMPTS, max_new_tokens=10)] for p in adapters]
    assert expected[0] != expected[1] != [g.text for g in alone_base]  # the adapters do change the answers
    mixed = [(who, p) for p in PROMPTS for who in (0, 1, None)]
    barrier = threading.Barrier(len(mixed))
    answers: dict = {}

    def ask(who, prompt):
        barrier.wait()
        answers[(who, prompt)] = (base if who is None else loaded[who]).complete([prompt], **OPTS)[0].text

    threads = [threading.Thread(target=ask, args=m) for m in mixed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [answers[(0, p)] for p in PROMPTS] == expected[0]
    assert [answers[(1, p)] for p in PROMPTS] == expected[1]
    assert [answers[(None, p)] for p in PROMPTS] == [g.text for g in alone_base]

    batcher.detach("ad0")
    batcher.detach("ad1")
    assert not hasattr(batcher.model, "peft_config")  # the plain base again, without LoRA layers
    assert [g.text for g in (base.complete([p], **OPTS)[0] for p in PROMPTS)] == [g.text for g in alone_base]
    # A caller that still holds an evicted adapter gets it loaded again, not the base's answers.
    assert loaded[0].complete([PROMPTS[0]], **OPTS)[0].text == expected[0][0]


def test_sampling_is_seeded_and_errors_reach_the_caller():
    model, tokenizer = load_model(TINY)
    loaded = Loaded(Batcher(model.eval()), tokenizer, RunConfig())
    sampled = dict(OPTS, temperature=1.0, seed=7)
    first = [g.text for g in loaded.complete(PROMPTS[:3], **sampled)]
    assert first == [g.text for g in loaded.complete(PROMPTS[:3], **sampled)]
    assert first != [g.text for g in loaded.complete(PROMPTS[:3], **dict(sampled, seed=8))]
    with pytest.raises(ValueError, match="empty"):
        loaded.complete([""], **OPTS)

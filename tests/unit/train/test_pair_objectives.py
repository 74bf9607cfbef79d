"""Reward model, DPO and GRPO as objectives on a tiny model: the hand-computed losses, the reference
with the adapter really switched off, precomputed reference log-probs, and GRPO's sampled batches."""

from __future__ import annotations

import math

import pytest
import torch

from lmtune.config import DataConfig, LoraConfig, MethodConfig, ModelConfig, RunConfig
from lmtune.config_method import GrpoConfig
from lmtune.data.encode import encode_preference
from lmtune.data.records import Example, Message
from lmtune.model.adapters import apply_peft
from lmtune.model.load import load_model
from lmtune.train.grpo import GrpoObjective, load_reward, sample_completions
from lmtune.train.loop import fit
from lmtune.train.methods import build_objective
from lmtune.train.metrics_log import read_metrics
from lmtune.train.pair_objectives import DpoObjective, pair_collate, reference_logps, RewardObjective, sequence_logps

PAIRS = [("How do I bake bread?", "Mix flour, water and yeast, then bake.", "No."),
         ("Say something kind.", "You are doing great.", "Go away."),
         ("What is 2+2?", "4", "5"),
         ("Name a colour.", "Blue.", "I refuse.")]


def pairs(tokenizer):
    cfg = DataConfig(template="chatml")
    out = []
    for q, good, bad in PAIRS:
        ex = Example("preference", prompt=[Message("user", q)], chosen=[Message("assistant", good)],
                     rejected=[Message("assistant", bad)])
        out.append(encode_preference(ex, tokenizer, cfg))
    return out


def lora_lm(seed=0):
    model, _ = load_model(ModelConfig(name="tiny-llama"))
    torch.manual_seed(seed)
    return apply_peft(model, MethodConfig(task="dpo"), LoraConfig(r=4, dropout=0.0))


def perturb_adapter(model, scale=0.5):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)


def test_dpo_at_the_reference_is_log_2_with_zero_margins(tokenizer):
    model = lora_lm()  # LoRA B starts at 0: the policy equals the reference
    objective = DpoObjective(tokenizer.pad_token_id, beta=0.1)
    batch = objective.collate(pairs(tokenizer))
    loss_sum, sums = objective.loss(model, batch)
    assert loss_sum.item() == pytest.approx(len(PAIRS) * math.log(2), rel=1e-6)
    assert sums["margin_sum"].item() == 0 and sums["n_correct"].item() == 0
    ipo = DpoObjective(tokenizer.pad_token_id, beta=0.1, kind="ipo")
    assert ipo.loss(model, batch)[0].item() == pytest.approx(len(PAIRS) * (1 / 0.2) ** 2, rel=1e-6)


def test_the_lora_reference_pass_has_the_adapter_disabled(tokenizer):
    model = lora_lm()
    perturb_adapter(model)
    batch = pair_collate(pairs(tokenizer), tokenizer.pad_token_id)
    base, _ = load_model(ModelConfig(name="tiny-llama"))  # the same fixed-seed base weights, no adapter at all
    with torch.no_grad():
        expected = sequence_logps(base, batch)
        policy = sequence_logps(model, batch)
    ref = reference_logps(model, batch, None)
    assert torch.allclose(ref, expected, atol=1e-5)
    assert not torch.allclose(policy, expected, atol=1e-3)  # the adapter does change the policy
    assert sequence_logps(model, batch).requires_grad  # and it is switched back on afterwards


def test_dpo_loss_equals_the_hand_computed_value(tokenizer):
    model = lora_lm()
    perturb_adapter(model, 0.3)
    beta = 0.5
    batch = pair_collate(pairs(tokenizer), tokenizer.pad_token_id)
    with torch.no_grad():
        pol = sequence_logps(model, batch).tolist()
    ref = reference_logps(model, batch, None).tolist()
    n = len(PAIRS)
    by_hand = sum(math.log(1 + math.exp(-beta * ((pol[i] - ref[i]) - (pol[n + i] - ref[n + i])))) for i in range(n))
    loss_sum, _ = DpoObjective(tokenizer.pad_token_id, beta).loss(model, batch)
    assert loss_sum.item() == pytest.approx(by_hand, rel=1e-5)


def test_precomputed_reference_gives_the_same_loss(tokenizer):
    model = lora_lm()
    perturb_adapter(model, 0.3)
    items = pairs(tokenizer)
    live = DpoObjective(tokenizer.pad_token_id, 0.1)
    pre = DpoObjective(tokenizer.pad_token_id, 0.1, precompute=True)
    prepared = pre.prepare(model, items, 3)
    assert len(prepared) == len(items) and len(prepared[0]) == 4
    a = live.loss(model, live.collate(items))[0]
    b = pre.loss(model, pre.collate(prepared))[0]
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_full_fine_tuning_dpo_keeps_a_frozen_reference(tokenizer, tmp_path, training_cfg):
    model, _ = load_model(ModelConfig(name="tiny-llama"))
    cfg = RunConfig.model_validate({"method": {"task": "dpo", "peft": "none"}})
    objective = build_objective(cfg, tokenizer, None, model)
    batch = pair_collate(pairs(tokenizer), tokenizer.pad_token_id)
    before = reference_logps(model, batch, None).clone()
    result = fit(model, pairs(tokenizer), pairs(tokenizer), objective, training_cfg(batch_size=2, max_steps=6,
                                                                                    learning_rate=1e-2), tmp_path)
    assert result.evals[-1]["eval_reward_accuracy"] >= 0.75  # the policy learnt to prefer the chosen answers
    assert result.evals[-1]["eval_margin"] > 0
    with torch.no_grad():
        policy_after = sequence_logps(model, batch)
    assert not torch.allclose(policy_after, before, atol=1e-3)
    # The frozen copy still gives the logps of the start, so the implicit rewards measure the change.
    margins = objective.margins(model, batch)
    change = (policy_after - before) * 0.1
    assert torch.allclose(margins["implicit_reward"], change[:4] - change[4:], atol=1e-4)


def test_reward_loss_is_bradley_terry_on_the_head_scores(tokenizer):
    model, _ = load_model(ModelConfig(name="tiny-llama"), "sequence_classification", num_labels=1)
    objective = RewardObjective(tokenizer.pad_token_id)
    batch = objective.collate(pairs(tokenizer))
    with torch.no_grad():
        scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].tolist()
    n = len(PAIRS)
    by_hand = sum(math.log(1 + math.exp(-(scores[i] - scores[n + i]))) for i in range(n))
    loss_sum, sums = objective.loss(model, batch)
    assert loss_sum.item() == pytest.approx(by_hand, rel=1e-5)
    assert sums["n_correct"].item() == sum(scores[i] > scores[n + i] for i in range(n))
    assert batch["n_units"] == n


def test_grpo_samples_score_and_train(tokenizer, tmp_path, training_cfg):
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("def short(prompts, completions, refs):\n    return [-len(c) for c in completions]\n")
    reward = load_reward(f"{reward_file}:short", DataConfig())
    model = lora_lm()
    cfg = GrpoConfig(group_size=4, max_new_tokens=6, kl_coef=0.1)
    prompts = [Example("chat", messages=[Message("user", "Hi"), Message("assistant", "Hello")]),
               Example("chat", messages=[Message("user", "Bye"), Message("assistant", "Ciao")])]
    # Monitored rewards are logged beside the trained one: the same function logs the same mean.
    monitors = {"short": reward, "three": lambda p, c, r: [3.0] * len(c)}
    objective = GrpoObjective(tokenizer, cfg, DataConfig(template="chatml"), reward, monitors)
    batch = objective.collate(prompts)
    assert batch["references"] == ["Hello", "Ciao"] and batch["prompts"][0].endswith("<|im_start|>assistant\n")
    samples = sample_completions(model, tokenizer, batch["prompts"] * 2, cfg)
    assert all(0 < len(c) <= 6 for _, c in samples)
    assert all(tokenizer.eos_token_id not in c[:-1] for _, c in samples)  # nothing after EOS
    result = fit(model, prompts, prompts, objective, training_cfg(batch_size=2, max_steps=2), tmp_path)
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert len(train) == 2 and all("train_reward" in r and "train_kl" in r for r in train)
    assert all(r["train_reward_short"] == pytest.approx(r["train_reward"]) for r in train)
    assert all(r["train_reward_three"] == pytest.approx(3.0) for r in train)
    assert train[0]["train_kl"] == pytest.approx(0.0, abs=1e-6)  # the adapter starts at zero: policy == reference
    assert all(0 < r["train_completion_length"] <= 6 for r in train)
    # The tokens trained on are the sampled completions: 2 prompts x 4 samples x the mean length.
    assert all(r["tokens"] == round(8 * r["train_completion_length"]) and r["tokens_per_s"] > 0 for r in train)
    assert result.steps == 2


def test_held_out_pair_scores_keep_the_pairs_order_and_skip_the_base_reference_pass(tokenizer):
    from lmtune.evaluate.pairs import pair_margins

    model = lora_lm()
    perturb_adapter(model)
    objective = DpoObjective(tokenizer.pad_token_id, beta=0.1)
    encoded = pairs(tokenizer)
    one_by_one = [objective.margins(model, objective.collate([p])) for p in encoded]
    # Scored in length-sorted batches of 3, given back in the pairs' own order.
    batched = pair_margins(model, encoded, objective, batch_size=3)
    for name in ("implicit_reward", "logp"):
        want = torch.cat([m[name] for m in one_by_one]).numpy()
        assert batched[name] == pytest.approx(want, abs=1e-5)
    base = model.get_base_model()  # the plain base is its own reference: margins 0, one forward per batch
    calls = []
    hook = base.register_forward_hook(lambda *args: calls.append(1))
    base_scores = pair_margins(base, encoded, objective, batch_size=4)
    hook.remove()
    assert len(calls) == 1 and (base_scores["implicit_reward"] == 0).all()

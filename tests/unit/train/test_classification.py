"""Classification heads: encoding, class weights against a hand computation, exact macro-F1, the head
trained and saved with its label names, and predictions unchanged by padding and by save/load."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import f1_score

from lmtune.config import DataConfig, LoraConfig, MethodConfig, ModelConfig
from lmtune.data.encode import IGNORE, encode_classification
from lmtune.data.records import Example
from lmtune.evaluate.head import class_probabilities, label_names_of
from lmtune.model.adapters import apply_peft
from lmtune.model.export import load_trained, save_model
from lmtune.model.load import load_model
from lmtune.train.classification import (
    class_weights,
    classification_collate,
    classification_loss,
    ClassificationObjective,
    classification_summary,
    head_logits,
)
from lmtune.train.loop import fit

LABELS = ["anger", "joy", "sadness"]
TEXTS = [("I am furious about this", "anger"), ("What a lovely day", "joy"), ("I miss her so much", "sadness"),
         ("This makes me so angry", "anger"), ("Best news ever", "joy"), ("Everything is grey and sad", "sadness"),
         ("Stop lying to me", "anger"), ("We won the cup", "joy")]
BERT = {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 256}


def examples(pairs=TEXTS):
    return [Example("labelled", text=t, label=y, file="t.jsonl", line=i + 1) for i, (t, y) in enumerate(pairs)]


def encode_all(tokenizer, pairs=TEXTS):
    return [encode_classification(e, tokenizer, DataConfig(max_seq_len=64), LABELS) for e in examples(pairs)]


def classifier(kind: str = "llama"):
    cfg = ModelConfig(name="tiny-llama", from_config=BERT if kind == "bert" else None)
    model, tok = load_model(cfg, "sequence_classification", num_labels=len(LABELS))
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {n: i for i, n in enumerate(LABELS)}
    return model, tok


def test_whitespace_is_normalised_so_it_cannot_be_a_label_cue(tokenizer):
    # TweetEval irony's training tweets end in two spaces where #irony was removed; its test tweets do not.
    cue = Example("labelled", text=" Great,\tanother  Monday  ", label="joy")
    clean = Example("text", text="Great, another Monday")
    on, off = DataConfig(), DataConfig(normalize_whitespace=False)
    assert encode_classification(cue, tokenizer, on, LABELS).input_ids == encode_classification(clean, tokenizer, on, LABELS).input_ids
    assert encode_classification(cue, tokenizer, off, LABELS).input_ids != encode_classification(clean, tokenizer, off, LABELS).input_ids


def test_encoding_keeps_the_text_only_with_the_class_index(tokenizer):
    enc = encode_classification(examples()[1], tokenizer, DataConfig(max_seq_len=5), LABELS)
    assert enc.target == 1 and len(enc.input_ids) == 5 and enc.labels == [IGNORE] * 5
    assert enc.truncated == len("What a lovely day") - 5
    bad = Example("labelled", text="x", label="fear", file="d.jsonl", line=7)
    with pytest.raises(ValueError, match=r"d.jsonl:7 \[label\].*'fear'"):
        encode_classification(bad, tokenizer, DataConfig(), LABELS)


def test_auto_class_weights_are_n_over_k_times_count(tokenizer):
    enc = encode_all(tokenizer)  # anger 3, joy 3, sadness 2 of 8
    assert class_weights("auto", enc, 3) == pytest.approx([8 / 9, 8 / 9, 8 / 6])
    assert class_weights("none", enc, 3) is None
    assert class_weights([1, 2, 3], enc, 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        class_weights([1, 2], enc, 3)
    with pytest.raises(ValueError, match=r"classes \[2\] have no training example"):
        class_weights("auto", enc[:2], 3)


def test_weighted_loss_equals_the_hand_computed_value(tokenizer):
    model, _ = classifier()
    enc = encode_all(tokenizer)
    batch = classification_collate(enc, pad_id=tokenizer.pad_token_id)
    weights = [0.5, 1.0, 2.0]
    with torch.no_grad():
        logits = head_logits(model, batch).tolist()
        weighted, sums = classification_loss(weights, 3)(model, batch)
        plain, _ = classification_loss(None, 3)(model, batch)
    by_hand = by_hand_plain = 0.0
    for row, e in zip(logits, enc):
        nll = -(row[e.target] - math.log(sum(math.exp(v) for v in row)))
        by_hand += weights[e.target] * nll
        by_hand_plain += nll
    assert weighted.item() == pytest.approx(by_hand, rel=1e-5)
    assert plain.item() == pytest.approx(by_hand_plain, rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)
    assert batch["n_units"] == len(enc)
    predicted = [max(range(3), key=row.__getitem__) for row in logits]
    assert sums["n_correct"].item() == sum(p == e.target for p, e in zip(predicted, enc))


def test_summary_macro_f1_matches_scikit_learn():
    gold = [0, 0, 1, 1, 2, 2, 2, 0]
    pred = [0, 1, 1, 1, 0, 2, 1, 0]
    totals = {"loss_sum": 4.0, "n_correct": sum(p == g for p, g in zip(pred, gold))}
    for c in range(3):
        totals[f"tp_{c}"] = sum(p == g == c for p, g in zip(pred, gold))
        totals[f"pred_{c}"], totals[f"gold_{c}"] = pred.count(c), gold.count(c)
    out = classification_summary(3)(totals, len(gold))
    assert out["eval_macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert out["eval_accuracy"] == pytest.approx(5 / 8) and out["eval_loss"] == 0.5


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_scores_do_not_depend_on_padding(tokenizer, kind):
    """Decoders score the last real token and encoders mask padding: a row alone equals it padded in a batch."""
    model, _ = classifier(kind)
    model.eval()
    enc = encode_all(tokenizer)
    together = class_probabilities(model, enc, tokenizer.pad_token_id, batch_size=8)
    alone = torch.stack([torch.as_tensor(class_probabilities(model, [e], tokenizer.pad_token_id)[0]) for e in enc])
    assert torch.allclose(torch.as_tensor(together), alone, atol=1e-5)


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_the_trained_head_and_label_names_survive_save_and_load(tokenizer, tmp_path, peft, training_cfg):
    model, tok = classifier()
    model = apply_peft(model, MethodConfig(task="classification", peft=peft), LoraConfig(r=4), "sequence_classification")
    head = [n for n, p in model.named_parameters() if p.requires_grad and "score" in n]
    assert head, "the new head must be trained"
    enc = encode_all(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "score" in n}
    objective = ClassificationObjective(tokenizer.pad_token_id, 3, class_weights("auto", enc, 3))
    # lr 3e-3 over 16 steps: at 1e-2 over 8 the eval loss oscillated and the check passed for half the seeds.
    result = fit(model, enc, enc, objective, training_cfg(batch_size=4, max_steps=16, learning_rate=3e-3), tmp_path)
    assert result.evals[-1]["eval_loss"] < 0.8 * result.evals[0]["eval_loss"]
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    model.eval()
    expected = class_probabilities(model, enc, tokenizer.pad_token_id)
    save_model(model, tok, tmp_path / "final", base_cfg=ModelConfig(name="tiny-llama"))
    loaded, _ = load_trained(tmp_path / "final")
    assert label_names_of(loaded) == LABELS
    got = class_probabilities(loaded, enc, tokenizer.pad_token_id)
    assert torch.allclose(torch.as_tensor(got), torch.as_tensor(expected), atol=1e-6)

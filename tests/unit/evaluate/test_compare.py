"""The prompt-only baselines: few-shot examples come from train, deterministically, one label after another."""

from lmtune.config import RunConfig
from lmtune.data.records import Example, Message
from lmtune.evaluate.compare import prompt_and_reference, select_shots
from lmtune.model.tiny import byte_tokenizer

LABELS = ["anger", "joy", "sadness"]


def labelled(i: int, label: str) -> Example:
    return Example(kind="labelled", text=f"tweet number {i}", label=label, line=i)


def test_shots_are_deterministic_and_cover_the_labels():
    train = [labelled(i, LABELS[i % 3] if i < 30 else "joy") for i in range(60)]
    shots = select_shots(train, k=4, seed=1)
    assert shots == select_shots(train, k=4, seed=1)
    assert shots != select_shots(train, k=4, seed=2)
    assert [s.label for s in shots[:3]] == sorted(LABELS)  # one of each label before any repeats
    assert len(shots) == 4 and len({id(s) for s in shots}) == 4
    assert select_shots(train, k=0, seed=1) == []


def test_few_shot_prompt_puts_the_shots_before_the_question():
    cfg = RunConfig.model_validate({"data": {"template": "chatml", "instruction": "Label: {text}"}})
    tok = byte_tokenizer()
    shots = [labelled(1, "joy"), labelled(2, "anger")]
    zero, ref = prompt_and_reference(labelled(9, "sadness"), cfg, tok, LABELS)
    few, ref2 = prompt_and_reference(labelled(9, "sadness"), cfg, tok, LABELS, shots)
    assert ref == ref2 == "sadness"
    assert few.endswith(zero)  # same question, same assistant header
    expected = ("<|im_start|>user\nLabel: tweet number 1<|im_end|>\n<|im_start|>assistant\njoy<|im_end|>\n"
                "<|im_start|>user\nLabel: tweet number 2<|im_end|>\n<|im_start|>assistant\nanger<|im_end|>\n")
    assert few == expected + zero


def test_chat_shots_show_whole_conversations():
    cfg = RunConfig.model_validate({"data": {"template": "chatml"}})
    tok = byte_tokenizer()
    shot = Example(kind="chat", messages=[Message("user", "2+2?"), Message("assistant", "#### 4")])
    query = Example(kind="chat", messages=[Message("user", "3+3?"), Message("assistant", "#### 6")])
    prompt, ref = prompt_and_reference(query, cfg, tok, None, [shot])
    assert ref == "#### 6"
    assert prompt.startswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n#### 4<|im_end|>\n")


def test_generated_scores_count_answers_cut_at_the_token_limit_and_take_per_example_shots():
    from lmtune.evaluate.compare import score_by_generation
    from lmtune.model.tiny import tiny_causal_lm

    tok = byte_tokenizer()
    model = tiny_causal_lm(vocab_size=len(tok), seed=1)
    cfg = RunConfig.model_validate({"data": {"template": "chatml", "instruction": "Label: {text}"},
                                    "eval": {"max_new_tokens": 2, "batch_size": 2}})
    test = [labelled(i, LABELS[i % 3]) for i in range(3)]
    own = [[labelled(10 + i, "joy")] for i in range(3)]  # each example its own shot
    scores = score_by_generation(model, tok, test, cfg, LABELS, own)
    # A random model almost never says EOS within 2 tokens: each answer that ran to the limit is counted.
    assert scores["max_new_tokens"] == 2 and 0 < scores["n_at_token_limit"] <= 3
    for i, p in enumerate(scores["predictions"]):
        assert f"tweet number {10 + i}" in p["prompt"] and all(f"tweet number {10 + j}" not in p["prompt"]
                                                                for j in range(3) if j != i)


def test_eval_labels_are_checked_against_the_data_before_training():
    import pytest

    from lmtune.evaluate.suite import check_eval_labels

    check_eval_labels(RunConfig.model_validate({"eval": {"metric": "f1:anger,joy"}}), LABELS)
    with pytest.raises(ValueError, match="eval.metric: .*f1:anger,fear"):
        check_eval_labels(RunConfig.model_validate({"eval": {"metric": "f1:anger,fear"}}), LABELS)
    with pytest.raises(ValueError, match="eval.positive_label 'fear'"):
        check_eval_labels(RunConfig.model_validate({"eval": {"positive_label": "fear"}}), LABELS)
    with pytest.raises(ValueError, match="eval.metric must be"):
        RunConfig.model_validate({"eval": {"metric": "f2"}})


def test_a_tool_calling_answer_is_scored_against_its_calls_with_the_tools_in_the_prompt():
    from lmtune.data.records import ToolCall

    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    example = Example("chat", messages=[Message("user", "Weather in Oslo?"), Message("assistant", "", 1, (call,))],
                      tools=tools)
    prompt, reference = prompt_and_reference(example, RunConfig.model_validate({"data": {"template": "chatml"}}),
                                             byte_tokenizer(), None)
    assert prompt.startswith("<|im_start|>system\n# Tools") and '"name": "get_weather"' in prompt
    assert prompt.endswith("Weather in Oslo?<|im_end|>\n<|im_start|>assistant\n")
    assert reference == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

"""Similar-shot selection with the built-in MiniLM: each prompt gets its nearest training examples."""

import pytest

from lmtune.data.records import Example, Message
from lmtune.evaluate.similar_shots import query_text, similar_shots

pytestmark = pytest.mark.slow  # loads MiniLM (a few seconds)


def chat(question: str, answer: str) -> Example:
    return Example("chat", messages=[Message("user", question), Message("assistant", answer)])


def test_each_prompt_gets_its_nearest_training_examples(tmp_path):
    train = [chat("How many apples are left if I eat 2 of 5 apples?", "#### 3"),
             chat("Translate 'good morning' into German.", "Guten Morgen"),
             chat("What is the capital city of France?", "Paris"),
             chat("Translate 'thank you' into French.", "Merci")]
    test = [chat("Translate 'good night' into German.", "Gute Nacht"),
            chat("Sam has 7 pears and gives away 3. How many pears remain?", "#### 4")]
    shots = similar_shots(train, test, k=2, cache_dir=str(tmp_path))
    assert shots[0][-1] is train[1]  # the most similar last, next to the question
    assert {id(s) for s in shots[0]} == {id(train[1]), id(train[3])}
    assert shots[1][-1] is train[0]
    assert similar_shots(train, test, k=2, cache_dir=str(tmp_path)) == shots  # deterministic
    assert similar_shots(train, test, k=0, cache_dir=str(tmp_path)) == [[], []]


def test_query_text_is_what_the_model_sees_before_the_answer():
    ex = Example("chat", messages=[Message("system", "Be brief."), Message("user", "Hi?"), Message("assistant", "Hello")])
    assert query_text(ex) == "Hi?"
    assert query_text(Example("labelled", text="a tweet", label="joy")) == "a tweet"

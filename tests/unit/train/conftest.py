"""Fixtures for loop tests: a tiny Llama, the byte tokenizer and a small encoded chat data set."""

from __future__ import annotations

import pytest
from accelerate.state import AcceleratorState, PartialState

from lmtune.config import DataConfig, TrainingConfig
from lmtune.data.encode import encode_example
from lmtune.data.records import Example, Message
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm

QUESTIONS = [
    ("What colour is the sky?", "Blue."),
    ("Two plus two?", "Four."),
    ("Capital of France?", "Paris."),
    ("Opposite of hot?", "Cold."),
    ("Largest planet?", "Jupiter."),
    ("Frozen water is?", "Ice."),
    ("Sound a cat makes?", "Meow."),
    ("First letter?", "A."),
    ("Colour of grass?", "Green."),
    ("Ten minus three?", "Seven."),
    ("Day after Monday?", "Tuesday."),
    ("A baby dog is a?", "Puppy."),
]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test builds its own Accelerator; accelerate keeps process-wide state, so reset it."""
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def encoded(tokenizer):
    cfg = DataConfig(template="chatml")
    examples = [
        Example(kind="chat", messages=[Message("user", q), Message("assistant", a)]) for q, a in QUESTIONS
    ]
    return [encode_example(e, tokenizer, cfg) for e in examples]


@pytest.fixture
def make_model(tokenizer):
    def make(seed: int = 0, **overrides):
        return tiny_causal_lm(overrides, seed=seed, vocab_size=len(tokenizer))

    return make


@pytest.fixture
def training_cfg():
    """Factory of quiet fp32 TrainingConfigs without early stopping unless asked."""
    return make_training_cfg


def make_training_cfg(**kw) -> TrainingConfig:
    """Quiet, fp32, no early stopping unless asked."""
    base = dict(
        precision="fp32", progress_bar=False, learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler="constant",
        max_grad_norm=None,
    )
    base.update(kw)
    base.setdefault("early_stopping", {"patience": None})
    return TrainingConfig(**base)

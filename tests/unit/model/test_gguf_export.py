"""GGUF export (model/gguf_export.py) read back by transformers, and the Ollama Modelfile (model/modelfile.py)."""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.config import ModelConfig
from lmtune.model.builtin import ModelError
from lmtune.model.gguf_export import write_gguf
from lmtune.model.load import load_model
from lmtune.model.modelfile import default_system, go_template, modelfile, template_family
from lmtune.model.tiny import CHATML_TEMPLATE, byte_tokenizer

# Sixteen chats of different lengths and scripts (the byte vocabulary covers any text).
PROMPTS = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"Question {i}: " + "é ü 東 " * i}]
           for i in range(16)]
SMOLLM_TEMPLATE = (  # SmolLM2-Instruct's template: chatml with a default system prompt
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _read_back(path):
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _max_logit_gap(a, b, tokenizer) -> float:
    gap = 0.0
    for chat in PROMPTS:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            gap = max(gap, (a(ids).logits - b(ids).logits).abs().max().item())
    return gap


QWEN2 = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}


@pytest.mark.parametrize("arch,tied", [({}, False), ({}, True), (QWEN2, False)])
def test_f16_gguf_reads_back_with_the_logits_tokenizer_and_template(tmp_path, arch, tied):
    model, tokenizer = load_model(ModelConfig(name="tiny-llama", from_config={**arch, "tie_word_embeddings": tied}))
    path = write_gguf(model, tokenizer, tmp_path / "tiny.gguf", "f16", chat_template=tokenizer.chat_template)
    again, tok = _read_back(path)
    assert _max_logit_gap(model.eval(), again, tokenizer) < 1e-2
    assert type(again) is type(model) and again.config.tie_word_embeddings is tied
    assert tok.chat_template == tokenizer.chat_template  # byte for byte
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("<|im_end|>", "<|im_start|>", "<pad>")
    for chat in PROMPTS:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert tok(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    fields = GGUFReader(str(path)).fields
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # prompts carry their own markers
    assert fields["tokenizer.ggml.eot_token_id"].contents() == tokenizer.eos_token_id


def test_q8_0_quantises_the_matrices_and_keeps_norms_in_float32(tmp_path):
    model, tokenizer = load_model(ModelConfig(name="tiny-llama"))
    f16 = write_gguf(model, tokenizer, tmp_path / "f16.gguf", "f16")
    q8 = write_gguf(model, tokenizer, tmp_path / "q8.gguf", "q8_0")
    types = {t.name: t.tensor_type for t in GGUFReader(str(q8)).tensors}
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q8_0 and types["output.weight"] == GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert q8.stat().st_size < f16.stat().st_size
    again, _ = _read_back(q8)
    gap = _max_logit_gap(model.eval(), again, tokenizer)
    assert 0 < gap < 0.1  # quantised: close, not equal


def test_unsupported_models_and_quants_are_refused(tmp_path):
    model, tokenizer = load_model(ModelConfig(name="tiny-llama"))
    with pytest.raises(ModelError, match="--quant"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf", "q4_k")
    gpt2, _ = load_model(ModelConfig(name="tiny-llama", from_config={"model_type": "gpt2", "n_embd": 32, "n_layer": 1,
                                                                      "n_head": 2}))
    with pytest.raises(ModelError, match="not 'gpt2'"):
        write_gguf(gpt2, tokenizer, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def _render_go(template: str, chat: list[dict]) -> str:
    """What Ollama renders for our TEMPLATE shape: the turn for every message, then the generation header."""
    head, rest = template.split("{{- range .Messages }}")
    turn, generation = rest.split("{{ end }}")
    body = "".join(turn.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]) for m in chat)
    return head + body + generation


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, SMOLLM_TEMPLATE])
def test_the_ollama_template_renders_the_jinja_prompt(template):
    tokenizer = byte_tokenizer()
    go = go_template(template_family(template))
    for chat in PROMPTS[:4] + [PROMPTS[5] + [{"role": "assistant", "content": "Yes."}, {"role": "user", "content": "And?"}]]:
        jinja = tokenizer.apply_chat_template(chat, chat_template=template, tokenize=False, add_generation_prompt=True)
        assert _render_go(go, chat) == jinja


def test_modelfile_carries_system_prompt_and_stop_strings():
    tokenizer = byte_tokenizer()
    assert default_system(SMOLLM_TEMPLATE, tokenizer) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert default_system(CHATML_TEMPLATE, tokenizer) is None
    text = modelfile("demo.gguf", SMOLLM_TEMPLATE, "<|im_end|>", "Answer with one word.")
    lines = text.splitlines()
    assert lines[0] == "FROM ./demo.gguf" and 'SYSTEM """Answer with one word."""' in lines
    assert [line for line in lines if line.startswith("PARAMETER")] == [
        'PARAMETER stop """<|im_end|>"""', 'PARAMETER stop """<|im_start|>"""']
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}' in text
    with pytest.raises(ModelError, match="no Ollama template"):
        modelfile("x.gguf", "{{ messages }}", "</s>")


@pytest.mark.slow
def test_the_builtin_smollm2_round_trips_through_f16_gguf(tmp_path):
    """The built-in model (byte-level BPE with 48,900 merges, llama.cpp pre-tokenizer `smollm`)."""
    from lmtune.model.gguf_export import source_pre_tokenizer

    cfg = ModelConfig(name="smollm2-135m-instruct")
    model, tokenizer = load_model(cfg)
    path = write_gguf(model, tokenizer, tmp_path / "smol.gguf", "f16", chat_template=tokenizer.chat_template,
                      pre_tokenizer=source_pre_tokenizer(cfg))
    assert GGUFReader(str(path)).get_field("tokenizer.ggml.pre").contents() == "smollm"
    again, tok = _read_back(path)
    assert tok.chat_template == tokenizer.chat_template
    for chat in PROMPTS:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert tok(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    # f16 rounding of 30 layers' weights moves logits by a few hundredths (0.050 measured on tweets; dev/LOG.md).
    assert _max_logit_gap(model.eval(), again, tokenizer) < 0.1

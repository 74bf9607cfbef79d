"""`lmtune generate` and `lmtune export` on the finished tiny run."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lmtune.cli import main
from lmtune.use import load_for_inference

from .cli_helpers import SYSTEM

pytestmark = pytest.mark.usefixtures("in_project_root")


@pytest.mark.slow
def test_generate_uses_the_runs_template_and_system_prompt(trained, capsys):
    _, run, _ = trained
    prompt = "I am so happy today"
    assert main(["generate", str(run), "--prompt", prompt, "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    # The same greedy decode done by hand: chatml with the run's system prompt, cut at EOS.
    model, tokenizer, _ = load_for_inference(run)
    text = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert expected and printed == expected + "\n"


def test_generate_on_an_unfinished_run_says_so(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("model:\n  name: tiny-llama\n")
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert "has no final model" in err and "--resume" in err


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("<|im_start|>user\nwhat a day<|im_end|>\n", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits


@pytest.mark.slow
def test_export_merged_gives_the_logits_of_the_adapter_model(trained, tmp_path, capsys):
    _, run, _ = trained
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in name for name in weights)  # plain weights, usable without peft
    adapter_model, tokenizer, _ = load_for_inference(run)
    merged_model, _, cfg = load_for_inference(out)
    assert type(merged_model).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(merged_model, tokenizer), _logits(adapter_model, tokenizer), atol=1e-5, rtol=0)
    assert cfg.data.system_prompt == SYSTEM  # `lmtune generate OUT` prompts like the run does


@pytest.mark.slow
def test_export_adapter(trained, tmp_path, capsys):
    _, run, _ = trained
    out = tmp_path / "adapter"
    assert main(["export", str(run), "--adapter", str(out)]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    exported = load_file(out / "adapter_model.safetensors")
    assert exported and all("lora_" in name for name in exported)
    original, tokenizer, _ = load_for_inference(run)
    again, _, cfg = load_for_inference(out)
    torch.testing.assert_close(_logits(again, tokenizer), _logits(original, tokenizer), atol=1e-6, rtol=0)
    assert cfg.data.system_prompt == SYSTEM

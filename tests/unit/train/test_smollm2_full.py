"""Full fine-tuning of the real built-in SmolLM2-135M: the GGUF flags are gone and every weight learns."""

import pytest
import torch

from lmtune.config import DataConfig, MethodConfig, LoraConfig, ModelConfig
from lmtune.data.encode import encode_example
from lmtune.data.records import Example, Message
from lmtune.model.adapters import apply_peft
from lmtune.model.load import load_model
from lmtune.train.loop import fit
from lmtune.train.sft import SftObjective


@pytest.mark.slow
def test_full_fine_tuning_of_smollm2_updates_every_weight(tmp_path, training_cfg):
    model, tok = load_model(ModelConfig(name="smollm2-135m-instruct"))
    model = apply_peft(model, MethodConfig(peft="none"), LoraConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = [encode_example(Example(kind="chat", messages=[Message("user", q), Message("assistant", a)]), tok,
                           DataConfig(system_prompt="Be brief."))
            for q, a in [("Capital of France?", "Paris."), ("2+2?", "4.")]]
    result = fit(model, data, [], SftObjective(True, tok.pad_token_id), training_cfg(batch_size=2, max_steps=2,
                 learning_rate=1e-4), tmp_path)
    assert result.train_losses[1] < result.train_losses[0]
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []

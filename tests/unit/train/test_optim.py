"""The optimizer: fused AdamW on CPU, with the same updates as the unfused one."""

import torch

from lmtune.config import TrainingConfig
from lmtune.train.optim import build_optimizer


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    torch.manual_seed(1)
    for _ in range(5):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_cpu_parameters_get_the_fused_kernel_and_its_updates_match_foreach():
    cfg = TrainingConfig(learning_rate=1e-2, weight_decay=0.1)
    fused_model, plain_model = _model(), _model()
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults["fused"] is True
    plain = build_optimizer(plain_model, cfg)
    for group in plain.param_groups:
        group["fused"], group["foreach"] = False, True
    _train(fused_model, fused)
    _train(plain_model, plain)
    for start, a, b in zip(_model().parameters(), fused_model.parameters(), plain_model.parameters()):
        assert not torch.equal(a, start)  # the step moved every parameter
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Decay on the weight matrices only; biases and the LayerNorm scale are in the no-decay group.
    assert [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]

"""The `method:` section of the run configuration: the task, how much of the model trains, and each
method's own settings (`method.dpo`, `method.grpo`), kept beside lmtune.config (whose RunConfig
includes it), as TRL keeps each trainer's config beside it. What each task does: train/methods.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lmtune.config_section import Section


class DpoConfig(Section):
    beta: float = Field(0.1, gt=0)
    """Strength of the pull towards the reference model (DPO's beta; IPO's 1/(2 tau))."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid: the DPO loss -log sigmoid(beta * margin); ipo: (margin - 1/(2 beta))^2."""
    precompute_reference: bool = False
    """Score every pair with the reference model once before training instead of at every step."""


class GrpoConfig(Section):
    reward: str = "lmtune.graders.rewards:gsm8k_numeric"
    """Reward: `module:function` (a Python file path or an importable module; read only from a local
    config file, never from the API) or the folder of a reward-model run. Unused when `grader` is set."""
    grader: dict[str, Any] | None = None
    """An OpenAI grader object (string_check, text_similarity, score_model, label_model, python, multi;
    docs/graders.md) used as the reward instead of `reward`. The data is then OpenAI's reinforcement
    format: `messages` (the prompt) plus any fields, which the grader reads as `item`."""
    monitor: list[str] = Field(default_factory=list)
    """More rewards (same forms as `reward`) scored on every sampled completion and logged per step as
    `train_reward_<function>` / `eval_reward_<function>`, not trained on: e.g. the exact numeric match
    beside a shaped reward."""
    group_size: int = Field(8, ge=2)
    """Completions sampled per prompt (training.batch_size prompts per micro-batch); advantages are
    normalised within each group."""
    max_new_tokens: int = Field(128, gt=0)
    """Longest completion sampled."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the completions."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of the completions."""
    clip_eps: float = Field(0.2, gt=0)
    """PPO-style clipping of the probability ratio to [1 - eps, 1 + eps]."""
    kl_coef: float = Field(0.04, ge=0)
    """Weight of the KL penalty to the reference model (the base, adapter off)."""

    @field_validator("grader")
    @classmethod
    def _grader(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from lmtune.graders.spec import parse_grader  # a schema module of config's layer (tests/unit/test_layers.py)

        return parse_grader(value).model_dump(exclude_none=True)


class MethodConfig(Section):
    task: Literal["sft", "classification", "reward", "dpo", "grpo"] = "sft"
    """Objective: sft (causal LM, loss on answers or raw text), classification (a sequence-classification
    head on labelled text), reward (a one-output head, pairwise loss on preference pairs), dpo (direct
    preference optimisation against the frozen base) or grpo (online RL from a reward)."""
    peft: Literal["none", "lora", "head"] = "lora"
    """Parameter-efficient method: none (full fine-tuning), lora, or head (classification and reward only:
    the pretrained body frozen, only the task head and an encoder's pooler trained, a linear probe)."""
    class_weights: Literal["none", "auto"] | list[float] = "none"
    """classification: weight of each class in the loss; auto = n / (k * n_class) from the training split."""
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    """DPO settings (task dpo)."""
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    """GRPO settings (task grpo)."""

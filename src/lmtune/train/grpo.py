"""Online RL from a reward (GRPO) as an objective on the one training loop.

    reward = load_reward("lmtune.graders.rewards:gsm8k_numeric")      # or the folder of a reward-model run
    objective = GrpoObjective(tokenizer, cfg.method.grpo, cfg.data, reward)
    fit(model, data.examples["train"], data.examples["validation"], objective, cfg.training, out_dir)

Per micro-batch of prompts: sample `group_size` completions of each with the current policy (batched,
KV cache, no gradient), score them, normalise the rewards within each prompt's group, and take the
clipped policy-gradient loss with a KL penalty to the reference (the same weights with the LoRA
adapter off). The loop counts one unit per prompt; the loss returned is the mean over the
micro-batch's completion tokens times its prompts, so a step averages per token (DAPO) within each
micro-batch. Train and validation records carry the mean reward, KL and completion length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from lmtune.config import DataConfig
from lmtune.config_method import GrpoConfig
from lmtune.data.collate import pad_collate
from lmtune.data.encode import IGNORE, Encoded, with_system
from lmtune.data.records import Example
from lmtune.data.templates import generation_prompt, resolve_template
from lmtune.model.generate import eos_ids_of, left_pad
from lmtune.graders.rewards import call_reward, load_reward_function
from lmtune.train.objective import Batch, Method, Objective, Plot
from lmtune.train.pair_objectives import peft_of
from lmtune.train.grpo_loss import group_advantages, grpo_loss

RewardFn = Callable[[list[str], list[str], list[str | None]], list[float]]


def prompt_of(example: Example, data_cfg: DataConfig, tokenizer) -> tuple[str, str | None]:
    """(generation prompt, reference answer) of a chat example: everything before its last answer."""
    messages = list(example.messages)
    answers = [i for i, m in enumerate(messages) if m.role == "assistant"]
    reference = messages[answers[-1]].content if answers else None
    context = messages[: answers[-1]] if answers else messages
    if not context:
        raise ValueError(f"{example.file}:{example.line}: a GRPO example needs a prompt before its answer")
    template = resolve_template(data_cfg.template, tokenizer)
    return generation_prompt(with_system(context, data_cfg.system_prompt), template, tokenizer), reference


def load_reward(spec: str, data_cfg: DataConfig) -> RewardFn:
    """A reward function `module:function`, or a reward-model run folder scoring prompt + completion."""
    folder = Path(spec).expanduser()
    if (folder / "final").is_dir() and (folder / "config.yaml").exists():
        return _reward_model(folder, data_cfg)
    fn = load_reward_function(spec)
    return lambda prompts, completions, refs: call_reward(fn, spec, prompts, completions, refs)


def reward_of(cfg: GrpoConfig, data_cfg: DataConfig, cache_dir: str) -> RewardFn:
    """The reward GRPO trains on: the grader when one is set, else `cfg.reward`."""
    if cfg.grader is not None:
        from lmtune.graders.as_reward import grader_reward

        return grader_reward(cfg.grader, cache_dir)
    return load_reward(cfg.reward, data_cfg)


def _reward_model(run: Path, data_cfg: DataConfig) -> RewardFn:
    from lmtune.model.export import load_trained  # only reward-model rewards need it

    model, tokenizer = load_trained(run / "final")
    model.eval()

    @torch.no_grad()
    def score(prompts: list[str], completions: list[str], refs: list[str | None]) -> list[float]:
        texts = [p + c + (tokenizer.eos_token or "") for p, c in zip(prompts, completions)]
        enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt",
                        truncation=True, max_length=data_cfg.max_seq_len)
        return model(**enc).logits[:, 0].float().tolist()

    return score


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], cfg: GrpoConfig) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, sampled completion ids ending at EOS) for every prompt, one batch, policy in eval mode."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    eos = eos_ids_of(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(encoded, pad_id, device)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                             temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, repetition_penalty=1.0,
                             max_new_tokens=cfg.max_new_tokens, eos_token_id=eos, pad_token_id=pad_id,
                             use_cache=True)
    finally:
        model.train(was_training)
    results = []
    for ids, new in zip(encoded, out[:, input_ids.shape[1]:].tolist()):
        end = next((k for k, t in enumerate(new) if t in eos), None)
        results.append((ids, new if end is None else new[: end + 1]))  # EOS is an action too
    return results


def _token_logps(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """[B, T] log-probability of every completion token (0 elsewhere) under `model` sampling at `temperature`."""
    targets = batch["target_ids"]
    keep = targets != IGNORE
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    # The completions were drawn from softmax(logits / T): the gradient is for that distribution.
    flat = -torch.nn.functional.cross_entropy(out.logits.float() / temperature, targets[keep], reduction="none")
    logps = torch.zeros(targets.shape, dtype=flat.dtype, device=flat.device)
    return logps.masked_scatter(keep, flat)


def monitor_name(spec: str) -> str:
    """The metric name of a monitored reward: its function name, or a reward-model run's folder name."""
    return Path(spec).name if ":" not in spec else spec.rpartition(":")[2]


class GrpoObjective(Objective):
    """GRPO on prompts (chat examples): sampled groups, group-normalised advantages, clipped loss with KL.

    `monitors` (name -> reward) are scored on the same completions and logged, never trained on.
    """

    name = "grpo"

    def __init__(self, tokenizer, cfg: GrpoConfig, data_cfg: DataConfig, reward: RewardFn,
                 monitors: dict[str, RewardFn] | None = None):
        self.tokenizer, self.cfg, self.data_cfg, self.reward = tokenizer, cfg, data_cfg, reward
        self.monitors = monitors or {}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def collate(self, items: list[Example]) -> Batch:
        """The prompts and reference answers of the examples; one unit per prompt."""
        pairs = [prompt_of(e, self.data_cfg, self.tokenizer) for e in items]
        return {"prompts": [p for p, _ in pairs], "references": [r for _, r in pairs], "n_units": len(items)}

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample each prompt's group, score it, and take the clipped policy-gradient loss with KL."""
        cfg, tokenizer = self.cfg, self.tokenizer
        peft = peft_of(model)
        policy = peft if peft is not None else getattr(model, "module", model)
        prompts = [p for p in batch["prompts"] for _ in range(cfg.group_size)]
        refs = [r for r in batch["references"] for _ in range(cfg.group_size)]
        samples = sample_completions(policy, tokenizer, prompts, cfg)
        texts = [tokenizer.decode(c, skip_special_tokens=True) for _, c in samples]
        rewards = torch.tensor(self.reward(prompts, texts, refs), dtype=torch.float32)
        advantages = group_advantages(rewards, group_size=cfg.group_size)
        rows = [Encoded(p + c, [IGNORE] * len(p) + c) for p, c in samples]
        device = next(policy.parameters()).device
        train = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in pad_collate(rows, self.pad_id).items()}
        # pad_collate shifts labels: position t predicts token t + 1, so mask marks the completion's predictions.
        mask = train["target_ids"] != IGNORE
        new = _token_logps(model, train, cfg.temperature)
        ref = None
        if cfg.kl_coef > 0:
            with torch.no_grad():
                if peft is None:
                    raise ValueError("GRPO's KL penalty needs LoRA (the reference is the adapter switched off)")
                with peft.disable_adapter():
                    ref = _token_logps(peft, train, cfg.temperature)
        loss_sum, sums = grpo_loss(new, None, ref, advantages.to(device), mask, cfg.clip_eps, cfg.kl_coef)
        n_prompts = len(batch["prompts"])
        scale = n_prompts / max(int(mask.sum()), 1)  # per-token mean, counted in prompts by the loop
        sums.update(loss_sum=loss_sum.detach() * scale, reward_sum=rewards.sum() / cfg.group_size,
                    n_completions=torch.tensor(float(len(samples))))
        for name, fn in self.monitors.items():
            sums[f"monitor_{name}_sum"] = torch.tensor(sum(fn(prompts, texts, refs)) / cfg.group_size)
        return loss_sum * scale, sums

    def units(self, item: Any) -> int:
        """One prompt."""
        return 1

    def length(self, item: Any) -> int:
        """0: sampled token counts are only known inside the loss (logged as completion length)."""
        return 0

    def summarize(self, totals: dict[str, float], n: float) -> dict[str, float]:
        """Mean loss and reward per prompt; KL and clipped fraction per token; completion length."""
        tokens = max(totals.get("n_tokens", 0.0), 1.0)
        return {
            "eval_loss": totals.get("loss_sum", 0.0) / n if n else float("nan"),
            "eval_reward": totals.get("reward_sum", 0.0) / n if n else float("nan"),
            "eval_kl": totals.get("kl_sum", 0.0) / tokens,
            "eval_clipped_fraction": totals.get("n_clipped", 0.0) / tokens,
            "eval_completion_length": totals.get("n_tokens", 0.0) / max(totals.get("n_completions", 0.0), 1.0),
            **{f"eval_reward_{name}": totals.get(f"monitor_{name}_sum", 0.0) / n if n else float("nan")
               for name in self.monitors},
        }


def build_grpo(cfg, tokenizer, data=None, model=None) -> GrpoObjective:
    """GRPO of a run config: method.grpo's reward (its grader, when set) and monitored rewards loaded."""
    grpo = cfg.method.grpo
    monitors = {monitor_name(spec): load_reward(spec, cfg.data) for spec in grpo.monitor}
    if len(monitors) != len(grpo.monitor):
        raise ValueError(f"method.grpo.monitor: two rewards share a function name in {grpo.monitor}")
    return GrpoObjective(tokenizer, grpo, cfg.data, reward_of(grpo, cfg.data, cfg.model.cache_dir), monitors)


GRPO = Method(name="grpo", build=build_grpo, items="prompts", config_section="grpo", token_budget=False,
              grader=lambda cfg: cfg.method.grpo.grader,
              plots=(Plot("reward", "reward.png", "mean reward",
                          also=lambda cfg: tuple(f"reward_{monitor_name(s)}" for s in cfg.method.grpo.monitor)),))

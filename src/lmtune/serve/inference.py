"""Models for inference: one copy of each base model, its fine-tuned LoRA adapters on it, batched decoding.

Usage:
    pool = ModelPool(cfg, store)
    loaded = pool.get("ft:tiny-llama:research::3f2a...", project="research")   # loads on first use
    prompt = loaded.chat_prompt([("user", "Hi")])           # the template the model was trained with
    gens = loaded.complete([prompt], max_new_tokens=32, temperature=0.0, top_p=1.0, stop=[], seed=0)
    for piece in loaded.stream(prompt, 32, 0.0, 1.0, [], seed=0): ...   # str pieces, then a StreamEnd

Fine-tuned LoRA models of a base are adapters of the one copy of that base (peft multi-adapter); the
base model itself is served with the adapters disabled. Full fine-tunes keep a copy of their own. Each
copy has one Batcher (batching.py), which decodes the requests that arrive together in one batch, so
callers only wait on their rows; they run in a thread pool, never on the event loop. Greedy streaming
gives the same text as `complete`, and a greedy answer does not depend on what it was batched with.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from lmtune.serve.checkpoint_models import checkpoint_model_folder, find_checkpoint
from lmtune.serve.config import ServeConfig
from lmtune.serve.errors import APIError, not_found
from lmtune.serve.store import Store

if TYPE_CHECKING:  # batching imports torch; the server starts without it
    from lmtune.serve.batching import Batcher, Row


@dataclass
class StreamEnd:
    """The end of a streamed completion: why it ended and the token counts."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Loaded:
    """A model ready to generate (a base, or an adapter on it), with the run config whose template and
    system prompt it was trained with."""

    batcher: Batcher
    tokenizer: Any
    run_cfg: Any
    adapter: str | None = None
    adapter_path: Path | None = None

    @property
    def model(self) -> Any:
        """The model in memory (a peft model once adapters are attached to the base)."""
        return self.batcher.model

    def chat_prompt(self, messages: list[Any], tools: list[dict[str, Any]] | None = None) -> str:
        """Render Messages (or (role, content) pairs) and the tools they may call with the model's
        template, ending with the assistant header."""
        from lmtune.data.encode import with_system
        from lmtune.data.records import Message
        from lmtune.data.templates import generation_prompt

        msgs = [m if isinstance(m, Message) else Message(*m) for m in messages]
        msgs = [replace(m, role="system") if m.role == "developer" else m for m in msgs]
        system = with_system(msgs, self.run_cfg.data.system_prompt)
        return generation_prompt(system, self.template, self.tokenizer, tools)

    @property
    def template(self) -> str:
        """The chat template the model was trained with (auto resolved)."""
        from lmtune.data.templates import resolve_template

        return resolve_template(self.run_cfg.data.template, self.tokenizer)

    def count(self, text: str) -> int:
        """Tokens in `text` as the model reads it."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_context(self, prompts: list[str], max_new_tokens: int | None, param: str) -> int | None:
        """Tokens left after the longest prompt; 400 context_length_exceeded, worded as OpenAI does, when
        a prompt (plus max_new_tokens when the client set it) does not fit the model's context."""
        context = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if not context:
            return None
        longest = max(self.count(p) for p in prompts)
        where = "in the messages" if param == "messages" else "in your prompt"
        if max_new_tokens is not None and longest + max_new_tokens > context:
            text = (f"This model's maximum context length is {context} tokens. However, you requested "
                    f"{longest + max_new_tokens} tokens ({longest} {where}, {max_new_tokens} in the completion). "
                    f"Please reduce the length of the {param} or completion.")
        elif longest >= context:
            text = (f"This model's maximum context length is {context} tokens. However, your {param} resulted in "
                    f"{longest} tokens. Please reduce the length of the {param}.")
        else:
            return context - longest
        raise APIError(400, text, param=param, code="context_length_exceeded")

    def _rows(self, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
              stop: list[str], seed: int) -> list[Row]:
        from lmtune.model.generate import eos_ids_of
        from lmtune.serve.batching import Row

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        eos = eos_ids_of(self.batcher.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]
        stop = [s for s in stop if s]

        def stopped(new: list[int]) -> bool:
            return bool(stop) and any(s in self.tokenizer.decode(new, skip_special_tokens=True) for s in stop)

        rows = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError("the prompt is empty: there is nothing to continue")
            rows.append(Row(ids, set(eos), pad, max_new_tokens, temperature, top_p, seed, self.adapter,
                            self.adapter_path, stopped))
        return rows

    def complete(self, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                 stop: list[str], seed: int) -> list[Any]:
        """A Generation for every prompt (in order), cut at EOS and stop strings as `lmtune eval` cuts them."""
        from lmtune.model.generate import finish_row

        rows = self._rows(prompts, max_new_tokens, temperature, top_p, stop, seed)
        self.batcher.submit(rows)
        for row in rows:
            for _ in row.tokens():
                pass
        return [finish_row(self.tokenizer, row.new, len(row.ids), row.eos, [s for s in stop if s]) for row in rows]

    def stream(self, prompt: str, max_new_tokens: int, temperature: float, top_p: float,
               stop: list[str], seed: int) -> Iterator[str | StreamEnd]:
        """Text pieces as they are generated, then a StreamEnd; the row leaves its batch if the caller stops."""
        (row,) = self._rows([prompt], max_new_tokens, temperature, top_p, stop, seed)
        stop = [s for s in stop if s]
        # Hold back text that could be the start of a stop string, or a half-decoded character.
        hold = max((len(s) for s in stop), default=1) - 1
        new: list[int] = []
        emitted = ""
        self.batcher.submit([row])
        try:
            for token in row.tokens():
                new.append(token)
                if token in row.eos:
                    break
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                cut = min((p for p in (text.find(s) for s in stop) if p >= 0), default=None)
                if cut is not None:
                    if cut > len(emitted):
                        yield text[len(emitted):cut]
                    yield StreamEnd("stop", len(row.ids), len(new))
                    return
                safe = len(text.rstrip("\ufffd")) - hold
                if safe > len(emitted) and text.startswith(emitted):
                    yield text[len(emitted):safe]
                    emitted = text[:safe]
            kept = [t for t in new if t not in row.eos]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            if text.startswith(emitted) and len(text) > len(emitted):
                yield text[len(emitted):]
            yield StreamEnd("stop" if new and new[-1] in row.eos else "length", len(row.ids), len(new))
        finally:
            row.cancelled.set()  # the client went away: the row leaves its batch at the next token


def adapter_name(model_id: str) -> str:
    """A peft adapter name for a fine-tuned model id (ids hold ':' and '.', which module names cannot)."""
    return "ft_" + hashlib.sha256(model_id.encode()).hexdigest()[:16]


class ModelPool:
    """One copy per base model (kept once loaded) and fine-tuned models on it (LRU of cfg.adapter_cache_size)."""

    def __init__(self, cfg: ServeConfig, store: Store):
        self.cfg, self.store = cfg, store
        self.bases: dict[str, Loaded] = {}
        self.adapters: OrderedDict[str, Loaded] = OrderedDict()
        self.copies: dict[str, tuple[Batcher, Any]] = {}  # base identity -> (its batcher, its tokenizer)
        self._loading = threading.Lock()
        self._threads_set = False

    def _torch_threads(self) -> None:
        if self.cfg.inference_threads and not self._threads_set:
            import torch

            torch.set_num_threads(self.cfg.inference_threads)
        self._threads_set = True

    def get(self, model_id: str, project: str) -> Loaded:
        """The loaded model `model_id` as `project` may use it; 404 for unknown or foreign models."""
        if model_id in self.cfg.base_models:
            with self._loading:
                if model_id not in self.bases:
                    self.bases[model_id] = self._load_base(model_id)
                return self.bases[model_id]
        row = self.store.one("SELECT * FROM models WHERE id=? AND project=? AND deleted=0", (model_id, project))
        checkpoint = None if row else find_checkpoint(self.store, model_id, project)
        if row is None and (checkpoint is None or not checkpoint["run_dir"]):
            raise not_found("model", model_id, "model")
        with self._loading:
            if model_id in self.adapters:
                self.adapters.move_to_end(model_id)
                return self.adapters[model_id]
            if checkpoint is not None:
                run_dir = Path(checkpoint["run_dir"])
                loaded = self._load_trained(run_dir, model_id, checkpoint_model_folder(run_dir, checkpoint["step"]))
            else:
                loaded = self._load_trained(Path(row["path"]), model_id)
            self.adapters[model_id] = loaded
            while len(self.adapters) > self.cfg.adapter_cache_size:
                self._release(self.adapters.popitem(last=False)[1])  # the least recently used goes first
            return loaded

    def evict(self, model_id: str) -> None:
        """Drop a (deleted) fine-tuned model from the cache."""
        with self._loading:
            loaded = self.adapters.pop(model_id, None)
            if loaded is not None:
                self._release(loaded)

    def _release(self, loaded: Loaded) -> None:
        if loaded.adapter is None:
            loaded.batcher.close()  # a full fine-tune: its own copy goes
        else:
            loaded.batcher.detach(loaded.adapter)

    def _copy(self, model_cfg: Any) -> tuple[Batcher, Any]:
        """The batcher and tokenizer of the one in-memory copy of this base model."""
        from lmtune.model.load import load_model
        from lmtune.serve.batching import Batcher

        key = model_cfg.model_dump_json()
        if key not in self.copies:
            self._torch_threads()
            model, tokenizer = load_model(model_cfg)
            self.copies[key] = (Batcher(model.eval()), tokenizer)
        return self.copies[key]

    def _load_base(self, name: str) -> Loaded:
        from lmtune.config import RunConfig

        run_cfg = RunConfig.model_validate({"model": {"name": name}})
        batcher, tokenizer = self._copy(run_cfg.model)
        return Loaded(batcher, tokenizer, run_cfg)

    def _load_trained(self, run_dir: Path, model_id: str, final: Path | None = None) -> Loaded:
        """The run's final model (or the saved model `final`, e.g. one of its checkpoints) on its base."""
        from lmtune.model.export import adapter_task, load_trained, saved_tokenizer
        from lmtune.runs import run_config
        from lmtune.serve.batching import Batcher

        final = final or run_dir / "final"
        cfg = run_config(run_dir)
        if adapter_task(final) == "causal_lm":
            batcher, base_tokenizer = self._copy(cfg.model)
            loaded = Loaded(batcher, saved_tokenizer(final, cfg.model, base_tokenizer), cfg,
                            adapter_name(model_id), final)
            batcher.attach(loaded.adapter, final)
            return loaded
        self._torch_threads()
        model, tokenizer = load_trained(final, base_cfg=cfg.model)
        return Loaded(Batcher(model.eval()), tokenizer, cfg)

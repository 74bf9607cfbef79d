"""Models for inference: base models and fine-tuned adapters (an LRU cache), batched and streamed generation.

Usage:
    pool = ModelPool(cfg, store)
    loaded = pool.get("ft:tiny-llama:research::3f2a...", project="research")   # loads on first use
    prompt = loaded.chat_prompt([("user", "Hi")])           # the template the model was trained with
    gens = loaded.complete([prompt], max_new_tokens=32, temperature=0.0, top_p=1.0, stop=[], seed=0)
    for piece in loaded.stream(prompt, 32, 0.0, 1.0, [], seed=0): ...   # str pieces, then a StreamEnd

Every call runs under the model's lock (a model is not re-entrant), and callers run it in a thread
pool, never on the event loop. Greedy streaming gives the same text as `complete`.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmtune.serve.config import ServeConfig
from lmtune.serve.errors import APIError, not_found
from lmtune.serve.store import Store


@dataclass
class StreamEnd:
    """The end of a streamed completion: why it ended and the token counts."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Loaded:
    """A model ready to generate, with the run config whose template and system prompt it was trained with."""

    model: Any
    tokenizer: Any
    run_cfg: Any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chat_prompt(self, messages: list[tuple[str, str]]) -> str:
        """Render (role, content) pairs with the model's template, ending with the assistant header."""
        from lmtune.data.encode import with_system
        from lmtune.data.records import Message
        from lmtune.data.templates import generation_prompt, resolve_template

        msgs = [Message("system" if role == "developer" else role, text) for role, text in messages]
        template = resolve_template(self.run_cfg.data.template, self.tokenizer)
        return generation_prompt(with_system(msgs, self.run_cfg.data.system_prompt), template, self.tokenizer)

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

    def complete(self, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                 stop: list[str], seed: int) -> list[Any]:
        """lmtune's batched generate() for every prompt (Generation objects, in order)."""
        from lmtune.evaluate.generate import generate

        with self.lock:
            return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, stop=stop, seed=seed)

    def stream(self, prompt: str, max_new_tokens: int, temperature: float, top_p: float,
               stop: list[str], seed: int) -> Iterator[str | StreamEnd]:
        """Text pieces as they are generated (one token at a time with the KV cache), then a StreamEnd."""
        # Generation runs in one thread of its own: torch's grad mode is per thread, and the consumer
        # (a streaming response) may pull each piece from a different thread of the pool.
        pieces: queue.Queue = queue.Queue(maxsize=64)
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for piece in self._stream(prompt, max_new_tokens, temperature, top_p, stop, seed):
                    if cancelled.is_set():
                        return
                    pieces.put(piece)
            except BaseException as err:  # handed to the consumer, which re-raises it
                pieces.put(err)

        threading.Thread(target=produce, daemon=True).start()
        try:
            while True:
                item = pieces.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, StreamEnd):
                    return
        finally:
            cancelled.set()  # the client went away: the producer stops at its next token
            while not pieces.empty():
                pieces.get_nowait()  # unblock a producer waiting on a full queue

    def _stream(self, prompt: str, max_new_tokens: int, temperature: float, top_p: float,
                stop: list[str], seed: int) -> Iterator[str | StreamEnd]:
        import torch

        from lmtune.evaluate.generate import eos_ids_of

        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("the prompt is empty: there is nothing to continue")
        # Hold back text that could be the start of a stop string, or a half-decoded character.
        hold = max((len(s) for s in stop), default=1) - 1
        with self.lock, torch.inference_mode():
            eos = set(eos_ids_of(self.model, self.tokenizer))
            rng = torch.Generator().manual_seed(seed)
            device = next(self.model.parameters()).device
            was_training = self.model.training
            self.model.eval()
            step_input, past, new, emitted, finish = torch.tensor([ids], device=device), None, [], "", "length"
            try:
                for _ in range(max_new_tokens):
                    out = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    token = _pick(out.logits[0, -1].float().cpu(), temperature, top_p, rng)
                    new.append(token)
                    if token in eos:
                        finish = "stop"
                        break
                    text = self.tokenizer.decode(new, skip_special_tokens=True)
                    cut = min((p for p in (text.find(s) for s in stop) if p >= 0), default=None)
                    if cut is not None:
                        if cut > len(emitted):
                            yield text[len(emitted):cut]
                        yield StreamEnd("stop", len(ids), len(new))
                        return
                    safe = len(text.rstrip("\ufffd")) - hold
                    if safe > len(emitted) and text.startswith(emitted):
                        yield text[len(emitted):safe]
                        emitted = text[:safe]
                    step_input = torch.tensor([[token]], device=device)
            finally:
                self.model.train(was_training)
        kept = [t for t in new if t not in eos]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        if text.startswith(emitted) and len(text) > len(emitted):
            yield text[len(emitted):]
        yield StreamEnd(finish, len(ids), len(new))


def _pick(logits: Any, temperature: float, top_p: float, rng: Any) -> int:
    """Greedy at temperature 0, else a sample from the top-p nucleus of softmax(logits / temperature)."""
    import torch

    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=rng))


class ModelPool:
    """Base models (kept once loaded) and fine-tuned models (LRU of cfg.adapter_cache_size)."""

    def __init__(self, cfg: ServeConfig, store: Store):
        self.cfg, self.store = cfg, store
        self.bases: dict[str, Loaded] = {}
        self.adapters: OrderedDict[str, Loaded] = OrderedDict()
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
        if row is None:
            raise not_found("model", model_id, "model")
        with self._loading:
            if model_id in self.adapters:
                self.adapters.move_to_end(model_id)
                return self.adapters[model_id]
            loaded = self._load_trained(Path(row["path"]))
            self.adapters[model_id] = loaded
            while len(self.adapters) > self.cfg.adapter_cache_size:
                self.adapters.popitem(last=False)  # the least recently used goes first
            return loaded

    def evict(self, model_id: str) -> None:
        """Drop a (deleted) fine-tuned model from the cache."""
        with self._loading:
            self.adapters.pop(model_id, None)

    def _load_base(self, name: str) -> Loaded:
        from lmtune.config import RunConfig
        from lmtune.model.load import load_model

        self._torch_threads()
        run_cfg = RunConfig.model_validate({"model": {"name": name}})
        model, tokenizer = load_model(run_cfg.model)
        return Loaded(model.eval(), tokenizer, run_cfg)

    def _load_trained(self, run_dir: Path) -> Loaded:
        from lmtune.use import load_for_inference

        self._torch_threads()
        model, tokenizer, run_cfg = load_for_inference(run_dir)
        return Loaded(model, tokenizer, run_cfg)

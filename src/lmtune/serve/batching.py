"""Dynamic batching for one model in memory: requests that arrive together are decoded in one batch.

Usage:
    batcher = Batcher(model)                                   # one worker thread per model copy
    row = Row(ids, eos={2}, pad_id=2, max_new_tokens=32, temperature=0.0, top_p=1.0, seed=0,
              adapter="a1b2", stop_check=lambda new: False)
    batcher.submit([row]); for token in row.tokens(): ...      # then row.finish_reason

The worker takes every request waiting when it is free, groups them by adapter (a LoRA adapter of a
peft model, or None for the base with adapters disabled) and runs one `model.generate` per group with
left padding and an attention mask, so a greedy answer is the one the row would get alone. Sampled
requests keep their own seed and therefore run alone. Each row leaves the batch at its own EOS, stop
string or token limit; the tokens reach the caller as they are generated.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from lmtune.model.generate import left_pad

_DONE = object()


@dataclass(eq=False)
class Row:
    """One prompt to continue, how to decode it, and the queue its tokens arrive on."""

    ids: list[int]
    eos: set[int]
    pad_id: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    adapter: str | None = None
    adapter_path: Path | None = None
    stop_check: Callable[[list[int]], bool] = lambda new: False
    new: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    _out: queue.Queue = field(default_factory=queue.Queue)

    def tokens(self) -> Iterator[int]:
        """The new tokens as they come (EOS included); raises what the worker raised."""
        while True:
            item = self._out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _push(self, token: int) -> None:
        """Record one generated token; marks the row finished at EOS, a stop string or its limit."""
        self.new.append(token)
        self._out.put(token)
        if token in self.eos or self.stop_check(self.new):
            self.finish_reason = "stop"
        elif len(self.new) >= self.max_new_tokens:
            self.finish_reason = "length"

    @property
    def done(self) -> bool:
        """Finished, or abandoned by its caller."""
        return self.finish_reason is not None or self.cancelled.is_set()


class _RowStreamer(BaseStreamer):
    """Hands each step's tokens to the rows still running (generate's first call carries the prompts)."""

    def __init__(self, rows: list[Row]):
        self.rows, self.prompt_seen = rows, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist()):
            if not row.done:
                row._push(int(token))

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """Takes each finished (or cancelled) row out of the batch; the batch ends when all are out."""

    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.tensor([row.done for row in self.rows], device=input_ids.device)


class Batcher:
    """A worker thread that decodes the waiting rows of one model in batches of at most `max_batch`."""

    def __init__(self, model: Any, max_batch: int = 32, window_s: float = 0.01):
        self.model, self.max_batch, self.window_s = model, max_batch, window_s
        self.lock = threading.Lock()  # held while decoding; hold it to change the model's adapters
        self._waiting: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lmtune-batcher")
        self._thread.start()
        self.batches = 0  # decoded batches so far (for tests and benchmarks)

    def submit(self, rows: list[Row]) -> None:
        """Queue rows for decoding; rows submitted together that sample (temperature > 0) share one batch."""
        self._waiting.put(list(rows))

    def close(self) -> None:
        """Stop the worker after the rows already queued."""
        self._waiting.put(None)

    def _loop(self) -> None:
        while True:
            jobs = [self._waiting.get()]
            # Wait a moment for the requests of the same burst, then take all that arrived meanwhile.
            deadline = time.monotonic() + self.window_s
            while (left := deadline - time.monotonic()) > 0 or not self._waiting.empty():
                try:
                    jobs.append(self._waiting.get(timeout=max(left, 0)))
                except queue.Empty:
                    break
            if any(job is None for job in jobs):
                jobs = [job for job in jobs if job is not None]
                self._run_all(jobs)
                return
            self._run_all(jobs)

    def _run_all(self, jobs: list[list[Row]]) -> None:
        greedy: dict[str | None, list[Row]] = {}
        sampled: list[list[Row]] = []
        for job in jobs:
            if all(r.temperature == 0 for r in job):
                for row in job:
                    greedy.setdefault(row.adapter, []).append(row)
            else:
                sampled.append(job)
        batches = [rows[i: i + self.max_batch] for rows in greedy.values()
                   for i in range(0, len(rows), self.max_batch)]
        for rows in batches + sampled:
            try:
                self._decode(rows)
            except BaseException as err:  # every caller of the batch learns why it failed
                for row in rows:
                    row._out.put(err)
            else:
                for row in rows:
                    row._out.put(_DONE)

    def attach(self, name: str, path: Path) -> None:
        """Load the LoRA adapter saved at `path` onto this model as `name` (once; the base is not copied)."""
        with self.lock:
            self._attach(name, path)

    def _attach(self, name: str, path: Path) -> None:
        from peft import PeftModel

        if hasattr(self.model, "peft_config") and name in self.model.peft_config:
            return
        with warnings.catch_warnings():
            # peft asks transformers for a renamed property; the warning is theirs, not the user's.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            if hasattr(self.model, "peft_config"):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()

    def detach(self, name: str) -> None:
        """Free the adapter `name`; the model becomes the plain base again when it was the last one."""
        with self.lock:
            if not hasattr(self.model, "peft_config") or name not in self.model.peft_config:
                return
            self.model.delete_adapter(name)
            if not self.model.peft_config:  # peft cannot disable adapters it no longer has
                self.model = self.model.unload()

    def _adapter(self, row: Row):
        if row.adapter is not None:
            # A caller may still hold a model the pool evicted meanwhile: load its adapter again.
            self._attach(row.adapter, row.adapter_path)
            self.model.set_adapter(row.adapter)
            return nullcontext()
        if hasattr(self.model, "peft_config"):
            return self.model.disable_adapter()  # the base model: the same weights, adapters off
        return nullcontext()

    def _decode(self, rows: list[Row]) -> None:
        rows = [r for r in rows if not r.cancelled.is_set()]
        if not rows:
            return
        first = rows[0]
        device = next(self.model.parameters()).device
        input_ids, attention_mask = left_pad([r.ids for r in rows], first.pad_id, device)
        options: dict[str, Any] = dict(max_new_tokens=max(r.max_new_tokens for r in rows), use_cache=True,
                                       eos_token_id=sorted(first.eos), pad_token_id=first.pad_id,
                                       do_sample=first.temperature > 0, repetition_penalty=1.0)
        if first.temperature > 0:
            options.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        with self.lock, torch.random.fork_rng(devices=[]), torch.inference_mode(), self._adapter(first):
            torch.manual_seed(first.seed)
            self.model.eval()
            self.model.generate(input_ids=input_ids, attention_mask=attention_mask, streamer=_RowStreamer(rows),
                                stopping_criteria=StoppingCriteriaList([_RowsDone(rows)]), **options)
            self.batches += 1

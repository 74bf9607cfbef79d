"""/v1/models and inference: /v1/chat/completions and /v1/completions, streamed (SSE) or not.

Usage:
    app.include_router(router, prefix="/v1")
    client.chat.completions.create(model=job.fine_tuned_model, messages=[...], stream=True)

Base models are visible to every project; a fine-tuned model only to the project that trained it.
Generation runs in FastAPI's thread pool (these are sync routes), never on the event loop.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from lmtune.data.tool_render import native_tools
from lmtune.serve.auth import Project
from lmtune.serve.chat_tools import answer_message, forced_call_prefix, prompt_tools, request_messages
from lmtune.serve.checkpoint_models import find_checkpoint
from lmtune.serve.errors import APIError, error_body, log, not_found
from lmtune.serve.inference import Loaded, StreamEnd
from lmtune.serve.limits import charge_tokens
from lmtune.serve.purge import purge_model
from lmtune.serve.query import refuse_unknown_query
from lmtune.serve.schemas import ChatRequest, CompletionRequest, Sampling

router = APIRouter(tags=["models"], dependencies=[Depends(refuse_unknown_query)])
DEFAULT_MAX_TOKENS = 256


def _model_view(model_id: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def _own_model(request: Request, project: str, model_id: str) -> dict[str, Any] | None:
    return request.app.state.store.one("SELECT * FROM models WHERE id=? AND project=? AND deleted=0",
                                       (model_id, project))


@router.get("/models")
def list_models(request: Request, project: Project) -> dict[str, Any]:
    """Base models, then the project's fine-tuned models (oldest first)."""
    started = request.app.state.started
    data = [_model_view(name, started, "system") for name in request.app.state.cfg.base_models]
    rows = request.app.state.store.all("SELECT * FROM models WHERE project=? AND deleted=0 ORDER BY seq", (project,))
    data += [_model_view(r["id"], r["created_at"], r["project"]) for r in rows]
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
def retrieve_model(request: Request, project: Project, model_id: str) -> dict[str, Any]:
    """One model."""
    if model_id in request.app.state.cfg.base_models:
        return _model_view(model_id, request.app.state.started, "system")
    row = _own_model(request, project, model_id) or find_checkpoint(request.app.state.store, model_id, project)
    if row is None:
        raise not_found("model", model_id, "model")
    return _model_view(model_id, row["created_at"], row["project"])


@router.delete("/models/{model_id:path}")
def delete_model(request: Request, project: Project, model_id: str) -> dict[str, Any]:
    """Delete a fine-tuned model of the project (base models cannot be deleted: 403)."""
    if model_id in request.app.state.cfg.base_models:
        raise APIError(403, f"Model {model_id} is a base model and cannot be deleted", param="model",
                       code="model_not_deletable")
    row = _own_model(request, project, model_id)
    if row is None:
        raise not_found("model", model_id, "model")
    request.app.state.store.execute("UPDATE models SET deleted=1 WHERE id=?", (model_id,))
    request.app.state.pool.evict(model_id)
    for ckpt in request.app.state.store.all("SELECT model_name FROM checkpoints WHERE job_id=?", (row["job_id"],)):
        request.app.state.pool.evict(ckpt["model_name"])  # its checkpoints' files go with the run folder
    purge_model(request.app.state.cfg, row)
    return {"id": model_id, "object": "model", "deleted": True}


def _options(request: Request, body: Sampling, limit: int | None) -> dict[str, Any]:
    cap = request.app.state.cfg.max_tokens_limit
    max_new = limit or min(DEFAULT_MAX_TOKENS, cap)
    if max_new > cap:
        raise APIError(400, f"max_tokens: at most {cap} on this server, got {max_new}", param="max_tokens")
    seed = body.seed if body.seed is not None else (0 if body.temperature == 0 else secrets.randbelow(2**31))
    return {"max_new_tokens": max_new, "temperature": body.temperature, "top_p": body.top_p,
            "stop": body.stops(), "seed": seed}


def _load(request: Request, project: str, body: Sampling) -> Loaded:
    request.state.model = body.model  # for the request log
    return request.app.state.pool.get(body.model, project)


def _count(request: Request, model_id: str, tokens: int, prompt_tokens: int) -> None:
    kind = "base" if model_id in request.app.state.cfg.base_models else "fine_tuned"
    request.app.state.metrics.tokens.labels(kind=kind).inc(tokens)
    request.state.tokens = tokens
    if request.app.state.cfg.tokens_per_minute is not None:
        charge_tokens(request.app.state.store, request.state.key_id, prompt_tokens + tokens)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _check_prompts(loaded: Loaded, prompts: list[str], param: str) -> None:
    if any(loaded.count(p) == 0 for p in prompts):
        raise APIError(400, f"{param}: the prompt is empty", param=param)


def _fit_context(loaded: Loaded, prompts: list[str], opts: dict[str, Any], asked: int | None, param: str) -> None:
    """400 context_length_exceeded when a prompt (plus the max_tokens the client `asked`) is too long;
    a default token limit is cut to what the context leaves."""
    room = loaded.check_context(prompts, asked, param)
    if room is not None:
        opts["max_new_tokens"] = min(opts["max_new_tokens"], room)


def _stream(request: Request, loaded: Loaded, body: Sampling, prompts: list[str], opts: dict[str, Any],
            chat: bool, started: float) -> StreamingResponse:
    """SSE chunks for every (prompt, choice), then usage when asked, then [DONE]; `started` is the request's time."""
    first_token = request.app.state.metrics.first_token.labels(endpoint="chat" if chat else "completion")
    head = {"id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": body.model}
    with_usage = bool(body.stream_options and body.stream_options.include_usage)

    def choice(index: int, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        extra = {"usage": usage} if with_usage else {}
        return _sse({**head, "choices": choices, **extra})

    def events() -> Iterator[str]:
        try:
            yield from generate_events()
        except Exception:  # the status line is already sent: report the failure in the stream, as OpenAI does
            log.exception("streamed generation failed for model %s", body.model)
            yield _sse(error_body(500, "The server had an error while generating.", "server_error", None,
                                  "internal_error"))

    def generate_events() -> Iterator[str]:
        prompt_tokens = completion_tokens = 0
        timed = False
        for p, prompt in enumerate(prompts):
            for k in range(body.n):
                index = p * body.n + k
                if chat:
                    yield chunk([choice(index, None, None, first=True)])
                for piece in loaded.stream(prompt, **{**opts, "seed": opts["seed"] + k}):
                    if isinstance(piece, StreamEnd):
                        prompt_tokens += piece.prompt_tokens if k == 0 else 0
                        completion_tokens += piece.completion_tokens
                        yield chunk([choice(index, None if chat else "", piece.finish_reason)])
                    else:
                        if not timed:
                            first_token.observe(time.perf_counter() - started)
                            timed = True
                        yield chunk([choice(index, piece, None)])
        _count(request, body.model, completion_tokens, prompt_tokens)
        if with_usage:
            yield chunk([], _usage(prompt_tokens, completion_tokens))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/chat/completions", response_model=None)
def chat_completions(request: Request, project: Project, body: ChatRequest) -> dict[str, Any] | StreamingResponse:
    """A chat reply rendered with the template the model was trained with; tool calls and JSON answers
    as chat_tools.py describes."""
    started = time.perf_counter()
    opts = _options(request, body, body.token_limit(0) or None)
    messages = request_messages(body)
    loaded = _load(request, project, body)
    tools = prompt_tools(body)
    prefix = forced_call_prefix(body, loaded.template == "tokenizer" and native_tools(loaded.tokenizer))
    try:
        prompt = loaded.chat_prompt(messages, tools) + prefix
    except ValueError as err:  # a conversation the model's template cannot render (e.g. assistant first)
        raise APIError(400, f"messages: {err}", param="messages") from None
    _fit_context(loaded, [prompt], opts, body.token_limit(0) or None, "messages")
    if body.stream:
        return _stream(request, loaded, body, [prompt], opts, chat=True, started=started)
    gens = loaded.complete([prompt] * body.n, **opts)
    completion = sum(g.n_new_tokens for g in gens)
    _count(request, body.model, completion, gens[0].n_prompt_tokens)
    choices = []
    for i, g in enumerate(gens):
        message, finish = answer_message(prefix + g.text, g.finish_reason, tools, body.response_format, prefix,
                                         parallel=body.parallel_tool_calls is not False)
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
            "model": body.model, "system_fingerprint": None, "usage": _usage(gens[0].n_prompt_tokens, completion),
            "choices": choices}


@router.post("/completions", response_model=None)
def completions(request: Request, project: Project, body: CompletionRequest) -> dict[str, Any] | StreamingResponse:
    """Plain text continuation of each prompt (no chat template)."""
    started = time.perf_counter()
    opts = _options(request, body, body.max_tokens or 16)  # OpenAI's default for completions
    loaded = _load(request, project, body)
    prompts = body.prompts()
    _check_prompts(loaded, prompts, "prompt")
    _fit_context(loaded, prompts, opts, body.max_tokens, "prompt")
    if body.stream:
        return _stream(request, loaded, body, prompts, opts, chat=False, started=started)
    gens = loaded.complete([p for p in prompts for _ in range(body.n)], **opts)
    completion = sum(g.n_new_tokens for g in gens)
    prompt_tokens = sum(g.n_prompt_tokens for g in gens[:: body.n])
    _count(request, body.model, completion, prompt_tokens)
    return {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
            "model": body.model, "system_fingerprint": None, "usage": _usage(prompt_tokens, completion),
            "choices": [{"index": i, "text": g.text, "finish_reason": g.finish_reason, "logprobs": None}
                        for i, g in enumerate(gens)]}

"""The OpenAI HTTP API as the emulated vLLM pods speak it: request bodies in, JSON and SSE out.

Pure functions over parsed JSON (no HTTP, no twin), so each rule is testable alone. The twin
needs token counts, not text, so a request is reduced to a `GenerationRequest`:

- **Prompt tokens**: the extension field ``prompt_tokens`` (an integer) when the client sends
  it; else the length of a token-id prompt (``[1, 2, 3]``); else an estimate from the text,
  ``ceil(characters / 4)`` (OpenAI's rule of thumb for English) with at least one token. A chat
  request counts the text parts of every message plus `CHAT_TOKENS_PER_MESSAGE` for the chat
  template's role markers.
- **Output tokens**: ``max_tokens`` (for chat also ``max_completion_tokens``, which wins); when
  absent, 16 for completions (OpenAI's and vLLM's default) and the rest of the context for chat
  (vLLM's). With ``ignore_eos: true`` the output has exactly that many tokens. Otherwise the
  emulated model stops at an end-of-sequence position the server draws from the Deployment's
  own output-length distribution (`output_length`), at least ``min_tokens``: finish reason
  ``stop`` when it came first, ``length`` when the limit did.

Prompt plus output tokens must fit ``max_model_len`` (400 otherwise, as vLLM answers). Only
what the twin can honour is accepted: ``n``/``best_of`` above 1, ``echo``, ``logprobs`` and
batched prompts are answered 400 rather than silently ignored. Sampling knobs (temperature,
top_p, stop strings, seed...) are accepted and have no effect: the text is filler, one word per
token (`token_text`), only its timing is modelled. Error bodies follow OpenAI's
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CHARS_PER_TOKEN = 4
"""Characters per token of the text estimate (OpenAI's rule of thumb for English)."""
CHAT_TOKENS_PER_MESSAGE = 4
"""Template tokens per chat message (role markers and separators of common chat templates)."""
DEFAULT_COMPLETION_MAX_TOKENS = 16
"""``max_tokens`` of /v1/completions when absent (OpenAI and vLLM)."""
WORDS = (" the", " of", " and", " to", " in", " a", " is", " that", " for", " it", " as",
         " was", " with", " on", " be", " at", " by", " this", " are", " from")
"""Filler text, one word per token; each is one token for common BPE tokenizers."""
SSE_DONE = b"data: [DONE]\n\n"


class Endpoint(StrEnum):
    COMPLETIONS = "completions"
    """POST /v1/completions: ``prompt`` in, ``choices[].text`` out."""
    CHAT = "chat"
    """POST /v1/chat/completions: ``messages`` in, ``choices[].message``/``delta`` out."""


class ApiError(Exception):
    """A request answered with an OpenAI error body and an HTTP status."""

    TYPES = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
             503: "ServiceUnavailableError"}

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message,
                          "type": self.TYPES.get(self.status, "InternalServerError"),
                          "param": self.param, "code": self.status}}


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """What the twin needs from a completion or chat request."""

    endpoint: Endpoint
    model: str | None
    """The requested model; None when the client left it out."""
    prompt_tokens: int
    max_tokens: int
    """Output limit, already defaulted and checked against the context length."""
    min_tokens: int = 0
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    """``stream_options.include_usage``: a last chunk with the token counts."""
    continuous_usage: bool = False
    """``stream_options.continuous_usage_stats`` (vLLM): the counts so far in every chunk."""


# ------------------------------------------------------------------ parsing

def parse_request(body: object, endpoint: Endpoint, *, max_model_len: int) -> GenerationRequest:
    """Validate a decoded JSON body; raises ApiError(400) naming the field and value."""
    if not isinstance(body, Mapping):
        raise ApiError(400, f"the request body must be a JSON object, got {_kind(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string, got {model!r}", "model")
    for name in ("n", "best_of"):
        if body.get(name) not in (None, 1):
            raise ApiError(400, f"{name} must be 1 (the emulator generates one sequence per "
                           f"request), got {body.get(name)!r}", name)
    for name in ("echo", "logprobs", "top_logprobs"):
        if body.get(name) not in (None, False, 0):
            raise ApiError(400, f"{name} is not supported by the emulator, got "
                           f"{body.get(name)!r}", name)
    if endpoint is Endpoint.CHAT:
        estimate = _chat_tokens(body.get("messages"))
        limit = _optional_int(body, "max_completion_tokens", minimum=1)
        if limit is None:
            limit = _optional_int(body, "max_tokens", minimum=1)
    else:
        estimate = _prompt_tokens(body.get("prompt"))
        limit = _optional_int(body, "max_tokens", minimum=1)
        if limit is None:
            limit = DEFAULT_COMPLETION_MAX_TOKENS
    explicit = _optional_int(body, "prompt_tokens", minimum=1)
    prompt_tokens = explicit if explicit is not None else estimate
    if limit is None:
        limit = max_model_len - prompt_tokens
        if limit < 1:
            raise ApiError(400, _too_long(max_model_len, prompt_tokens, 1))
    elif prompt_tokens + limit > max_model_len:
        raise ApiError(400, _too_long(max_model_len, prompt_tokens, limit))
    min_tokens = _optional_int(body, "min_tokens", minimum=0) or 0
    if min_tokens > limit:
        raise ApiError(400, f"min_tokens ({min_tokens}) must be <= max_tokens ({limit})",
                       "min_tokens")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise ApiError(400, f"stream_options must be an object, got {options!r}",
                       "stream_options")
    return GenerationRequest(
        endpoint=endpoint, model=model, prompt_tokens=prompt_tokens, max_tokens=limit,
        min_tokens=min_tokens, ignore_eos=_bool(body, "ignore_eos"),
        stream=_bool(body, "stream"),
        include_usage=options is not None and _bool(options, "include_usage",
                                                    "stream_options."),
        continuous_usage=options is not None and _bool(options, "continuous_usage_stats",
                                                       "stream_options."))


def output_length(req: GenerationRequest, eos_tokens: int) -> tuple[int, str]:
    """Tokens to generate and the finish reason, given the drawn end-of-sequence position."""
    if req.ignore_eos or eos_tokens >= req.max_tokens:
        return req.max_tokens, "length"
    return max(eos_tokens, req.min_tokens, 1), "stop"


def text_tokens(text: str) -> int:
    """Token estimate of a text: ceil(characters / 4), at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str) and prompt:
        return text_tokens(prompt)
    if (isinstance(prompt, list) and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) > 1 and all(
            isinstance(p, str | list) for p in prompt):
        raise ApiError(400, f"batched prompts are not supported by the emulator, got "
                       f"{len(prompt)} prompts", "prompt")
    raise ApiError(400, f"prompt must be a non-empty string or list of token ids, got "
                   f"{_kind(prompt)}", "prompt")


def _chat_tokens(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"messages must be a non-empty list, got {_kind(messages)}",
                       "messages")
    chars = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"{where} must be an object with a string role, got "
                           f"{_kind(message)}", where)
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping):
                    raise ApiError(400, f"{where}.content[{j}] must be an object, got "
                                   f"{_kind(part)}", f"{where}.content")
                text = part.get("text")
                chars += len(text) if isinstance(text, str) else 0
        elif content is not None:
            raise ApiError(400, f"{where}.content must be a string, a list of parts or null, "
                           f"got {_kind(content)}", f"{where}.content")
    return max(1, math.ceil(chars / CHARS_PER_TOKEN)) + CHAT_TOKENS_PER_MESSAGE * len(messages)


def _optional_int(body: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ApiError(400, f"{name} must be an integer >= {minimum}, got {value!r}", name)
    return value


def _bool(body: Mapping[str, Any], name: str, prefix: str = "") -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{prefix}{name} must be a boolean, got {value!r}", prefix + name)
    return value


def _too_long(max_model_len: int, prompt: int, output: int) -> str:
    return (f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt + output} tokens ({prompt} in the prompt, {output} in the "
            f"completion). Please reduce the length of the prompt or completion.")


def _kind(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else None
    return text if text is not None and len(text) <= 40 else type(value).__name__


# ------------------------------------------------------------------ responses

def token_text(index: int) -> str:
    """The filler text of output token ``index`` (0-based)."""
    return WORDS[index % len(WORDS)]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """Identity of one response: every chunk and the final body carry it."""

    endpoint: Endpoint
    id: str
    created: int
    """Unix seconds."""
    model: str

    def _envelope(self, *, chunk: bool) -> dict[str, Any]:
        if self.endpoint is Endpoint.CHAT:
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            kind = "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def body(self, num_tokens: int, finish_reason: str, prompt_tokens: int) -> dict[str, Any]:
        """The non-streaming response."""
        text = "".join(token_text(i) for i in range(num_tokens))
        if self.endpoint is Endpoint.CHAT:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                                                              "content": text},
                                      "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": finish_reason}
        return {**self._envelope(chunk=False), "choices": [choice],
                "usage": usage(prompt_tokens, num_tokens)}

    def chunk(self, text: str | None, finish_reason: str | None = None, *,
              role: bool = False, counts: tuple[int, int] | None = None) -> bytes:
        """One SSE event with one choice: a token's text, the chat role, or the finish;
        `counts` (prompt, completion tokens so far) adds a ``usage`` field."""
        if self.endpoint is Endpoint.CHAT:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None,
                      "finish_reason": finish_reason}
        payload = {**self._envelope(chunk=True), "choices": [choice]}
        if counts is not None:
            payload["usage"] = usage(*counts)
        return sse(payload)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The last event of a stream with ``include_usage``: no choice, the counts."""
        return sse({**self._envelope(chunk=True), "choices": [],
                    "usage": usage(prompt_tokens, completion_tokens)})


def sse(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying a JSON payload."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def models_body(models: Sequence[str], *, created: int, max_model_len: int) -> dict[str, Any]:
    """GET /v1/models: the served model names, as vLLM lists them."""
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": "inferno",
         "root": name, "parent": None, "max_model_len": max_model_len}
        for name in models]}

"""OpenAI wire rules: token counts from request bodies, limits, errors, response bodies."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from sim.openai_wire import (
    CHAT_TOKENS_PER_MESSAGE,
    SSE_DONE,
    ApiError,
    Endpoint,
    GenerationRequest,
    Reply,
    models_body,
    output_length,
    parse_request,
    token_text,
)

LEN = 1000
C, CHAT = Endpoint.COMPLETIONS, Endpoint.CHAT


def parse(body: object, endpoint: Endpoint = C) -> GenerationRequest:
    return parse_request(body, endpoint, max_model_len=LEN)


@pytest.mark.parametrize(("body", "prompt_tokens"), [
    ({"prompt": "abcdefgh"}, 2),
    ({"prompt": "abcdefghi"}, 3),
    ({"prompt": "a"}, 1),
    ({"prompt": "é" * 8}, 2),
    ({"prompt": [5, 6, 7]}, 3),
    ({"prompt": ["abcdefgh"]}, 2),
    ({"prompt": [[5, 6, 7, 8]]}, 4),
    ({"prompt": "abcdefgh", "prompt_tokens": 300}, 300),
], ids=["8-chars", "9-chars", "1-char", "unicode", "token-ids", "batch-of-one",
        "ids-batch-of-one", "explicit"])
def test_completion_prompt_tokens(body: dict[str, Any], prompt_tokens: int) -> None:
    """Text counts ceil(chars / 4), token ids count themselves, prompt_tokens wins."""
    assert parse(body).prompt_tokens == prompt_tokens


def test_chat_prompt_tokens_count_text_parts_and_template() -> None:
    """Chat: ceil(all text characters / 4) plus the template tokens of each message."""
    body = {"messages": [
        {"role": "system", "content": "abcd"},
        {"role": "user", "content": [{"type": "text", "text": "abcdefgh"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None}]}
    assert parse(body, CHAT).prompt_tokens == math.ceil(12 / 4) + 3 * CHAT_TOKENS_PER_MESSAGE


@pytest.mark.parametrize(("body", "endpoint", "max_tokens"), [
    ({"prompt": "abcd"}, C, 16),
    ({"prompt": "abcd", "max_tokens": 7}, C, 7),
    ({"messages": [{"role": "user", "content": "abcd"}]}, CHAT, LEN - 1 - 4),
    ({"messages": [{"role": "user", "content": "abcd"}], "max_tokens": 9}, CHAT, 9),
    ({"messages": [{"role": "user", "content": "abcd"}], "max_tokens": 9,
      "max_completion_tokens": 5}, CHAT, 5),
], ids=["completions-default", "completions", "chat-rest-of-context", "chat-max-tokens",
        "max-completion-tokens-wins"])
def test_output_limit_defaults(body: dict[str, Any], endpoint: Endpoint,
                               max_tokens: int) -> None:
    """16 for completions (OpenAI, vLLM), the rest of the context for chat (vLLM)."""
    assert parse(body, endpoint).max_tokens == max_tokens


def test_stream_flags() -> None:
    """stream, stream_options.include_usage, ignore_eos and min_tokens are read."""
    req = parse({"prompt": "abcd", "stream": True, "stream_options": {"include_usage": True},
                 "ignore_eos": True, "min_tokens": 3, "model": "m"})
    assert (req.stream, req.include_usage, req.ignore_eos, req.min_tokens, req.model) == (
        True, True, True, 3, "m")
    assert not parse({"prompt": "abcd", "stream": True}).include_usage
    assert parse({"prompt": "abcd", "stream_options": {"continuous_usage_stats": True}}
                 ).continuous_usage


@pytest.mark.parametrize(("body", "endpoint", "param", "match"), [
    ([1, 2], C, None, "JSON object, got list"),
    ({"prompt": ""}, C, "prompt", "non-empty string"),
    ({"prompt": None}, C, "prompt", "got null"),
    ({"prompt": ["a", "b"]}, C, "prompt", "batched prompts"),
    ({"prompt": [1, "a"]}, C, "prompt", "list of token ids"),
    ({"prompt": "a", "model": 3}, C, "model", "model must be a string"),
    ({"prompt": "a", "max_tokens": 0}, C, "max_tokens", "integer >= 1, got 0"),
    ({"prompt": "a", "max_tokens": "5"}, C, "max_tokens", "got '5'"),
    ({"prompt": "a", "max_tokens": True}, C, "max_tokens", "got True"),
    ({"prompt": "a", "prompt_tokens": 0}, C, "prompt_tokens", "got 0"),
    ({"prompt": "a", "n": 2}, C, "n", "n must be 1"),
    ({"prompt": "a", "best_of": 3}, C, "best_of", "best_of must be 1"),
    ({"prompt": "a", "echo": True}, C, "echo", "not supported"),
    ({"prompt": "a", "logprobs": 2}, C, "logprobs", "not supported"),
    ({"prompt": "a", "max_tokens": 4, "min_tokens": 5}, C, "min_tokens", r"\(5\) must be <="),
    ({"prompt": "a", "stream": "yes"}, C, "stream", "boolean"),
    ({"prompt": "a", "stream_options": []}, C, "stream_options", "object"),
    ({"prompt": "a", "stream_options": {"include_usage": 1}}, C,
     "stream_options.include_usage", "boolean"),
    ({"prompt": "a", "prompt_tokens": 990, "max_tokens": 20}, C, None,
     "maximum context length is 1000 tokens. However, you requested 1010 tokens"),
    ({"messages": [{"role": "user", "content": "a"}], "prompt_tokens": 1000}, CHAT, None,
     "maximum context length"),
    ({"messages": []}, CHAT, "messages", "non-empty list"),
    ({"messages": [{"content": "a"}]}, CHAT, "messages[0]", "string role"),
    ({"messages": [{"role": "user", "content": 5}]}, CHAT, "messages[0].content", "got 5"),
    ({"messages": [{"role": "user", "content": ["a"]}]}, CHAT, "messages[0].content",
     r"content\[0\] must be an object"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_bad_requests_are_400_naming_the_field(body: object, endpoint: Endpoint,
                                               param: str | None, match: str) -> None:
    """Every rejected body is a 400 whose message names the field and the value."""
    with pytest.raises(ApiError, match=match) as info:
        parse(body, endpoint)
    assert (info.value.status, info.value.param) == (400, param)
    assert info.value.body() == {"error": {"message": info.value.message,
                                           "type": "BadRequestError", "param": param,
                                           "code": 400}}


@pytest.mark.parametrize(("ignore_eos", "min_tokens", "eos", "expected"), [
    (True, 0, 3, (10, "length")),
    (False, 0, 3, (3, "stop")),
    (False, 0, 10, (10, "length")),
    (False, 0, 50, (10, "length")),
    (False, 5, 3, (5, "stop")),
], ids=["ignore-eos", "eos-first", "eos-at-limit", "limit-first", "min-tokens"])
def test_output_length_and_finish_reason(ignore_eos: bool, min_tokens: int, eos: int,
                                         expected: tuple[int, str]) -> None:
    """ignore_eos generates max_tokens; else the drawn EOS ends it, floored by min_tokens."""
    req = parse({"prompt": "a", "max_tokens": 10, "ignore_eos": ignore_eos,
                 "min_tokens": min_tokens})
    assert output_length(req, eos) == expected


def events(data: bytes) -> list[Any]:
    """The JSON payloads of a block of server-sent events."""
    assert data.endswith(b"\n\n")
    out = []
    for event in data.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: ")
        out.append(json.loads(event[6:]))
    return out


def test_completion_chunks_and_body() -> None:
    """A text_completion chunk carries the token text; the body has the text and usage."""
    reply = Reply(endpoint=C, id="cmpl-1", created=7, model="m")
    (chunk,) = events(reply.chunk(token_text(1)))
    assert chunk == {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
                     "choices": [{"index": 0, "text": token_text(1), "logprobs": None,
                                  "finish_reason": None}]}
    body = reply.body(3, "length", 11)
    assert body["choices"][0]["text"] == "".join(token_text(i) for i in range(3))
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    (usage,) = events(reply.usage_chunk(11, 3))
    (counted,) = events(reply.chunk(" of", counts=(11, 2)))
    assert counted["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    assert (usage["choices"], usage["usage"]["total_tokens"]) == ([], 14)


def test_chat_chunks_and_body() -> None:
    """Chat: a role chunk first, content deltas, an empty delta with the finish reason."""
    reply = Reply(endpoint=CHAT, id="chatcmpl-1", created=7, model="m")
    role, token, end = events(reply.chunk("", role=True) + reply.chunk(" of")
                              + reply.chunk(None, "stop"))
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert token["choices"][0]["delta"] == {"content": " of"}
    assert (end["choices"][0]["delta"], end["choices"][0]["finish_reason"]) == ({}, "stop")
    body = reply.body(2, "stop", 5)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": token_text(0) + token_text(1)}
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_models_body_lists_names() -> None:
    """GET /v1/models lists each served name with its context length."""
    body = models_body(["a", "b"], created=1, max_model_len=LEN)
    assert [(m["id"], m["max_model_len"]) for m in body["data"]] == [("a", LEN), ("b", LEN)]

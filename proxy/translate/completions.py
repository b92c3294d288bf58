"""Legacy OpenAI completions <-> Ollama ``/api/generate``.

Pure. ``prompt`` is one string or a list of strings. Several prompts (LangChain's ``OpenAI`` LLM sends
its ``generate([...])`` and ``.batch()`` prompts in one request) are several ``/api/generate`` calls,
one per prompt (``prompts_of``; the shell runs them concurrently): their answers are merged with
``choices`` indexed as OpenAI does (``index = prompt_index * n + i``, and ``n`` is 1 here) and the
usage summed (``merge_completions``), or, streamed, interleaved as they come (``CompletionFanOut``).
Token arrays as ``prompt`` stay a 400: Ollama takes text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.errors import InvalidRequestError
from proxy.jsonio import dumps
from proxy.translate.chat_tokens import usage_from_ollama
from proxy.translate.fields import (
    check_n,
    ollama_extras,
    opt_bool,
    opt_int,
    opt_str,
    sampling_options,
    wrong_type,
)

__all__ = ["MAX_PROMPTS", "CompletionFanOut", "completion_request_to_ollama", "merge_completions",
           "ollama_generate_to_openai", "prompt_of", "prompts_of"]

MAX_PROMPTS = 64
"""Most prompts one request may carry (each is an Ollama call; LangChain sends 20 at a time)."""


def prompts_of(body: Mapping[str, object]) -> list[str]:
    """The request's prompts: one string, or a list of 1 to ``MAX_PROMPTS`` strings (400 otherwise)."""
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequestError("Missing required parameter: 'prompt'.", param="prompt", code="missing_field")
    if isinstance(prompt, list):
        if prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) > MAX_PROMPTS:
                raise InvalidRequestError(f"At most {MAX_PROMPTS} prompts may be sent in one request.",
                                          param="prompt", code="invalid_value")
            return list(prompt)
        if not prompt:
            raise InvalidRequestError("Invalid 'prompt': empty array.", param="prompt")
        raise InvalidRequestError("Token arrays as 'prompt' are not supported by Ollama backends; send text.",
                                  param="prompt", code="unsupported_parameter")
    if not isinstance(prompt, str):
        raise wrong_type("prompt", "a string or an array of strings", prompt)
    return [prompt]


def prompt_of(body: Mapping[str, object]) -> str:
    """The first (usually the only) prompt."""
    return prompts_of(body)[0]


def completion_request_to_ollama(
    body: Mapping[str, object],
    *,
    model: str,
    default_options: Mapping[str, object] = {},
    default_keep_alive: str | int | float | None = None,
) -> dict[str, object]:
    """Translate an OpenAI completions request into an ``/api/generate`` body for ``model``."""
    check_n(body)
    best_of = opt_int(body, "best_of", 1, 20)
    if best_of is not None and best_of > 1:
        raise InvalidRequestError("best_of > 1 is not supported.", param="best_of", code="unsupported_parameter")
    # with several prompts, "prompt" is the first: the shell sends one call per prompt
    native: dict[str, object] = {"model": model, "prompt": prompt_of(body),
                                 "stream": opt_bool(body, "stream") or False}
    suffix = opt_str(body, "suffix")
    if suffix:
        native["suffix"] = suffix
    if opt_bool(body, "raw"):
        native["raw"] = True
    opt_bool(body, "echo")
    logprobs = opt_int(body, "logprobs", 0, 5)
    if logprobs:
        native["logprobs"] = True
        native["top_logprobs"] = logprobs
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, Mapping):
        raise wrong_type("stream_options", "an object", opts)
    ollama_extras(body, native, sampling_options(body), default_options=default_options,
                  default_keep_alive=default_keep_alive)
    return native


def _legacy_logprobs(items: object) -> dict[str, object] | None:
    """Ollama's per-token logprobs in the legacy completions layout."""
    if not isinstance(items, list) or not items:
        return None
    tokens, values, tops, offsets, offset = [], [], [], [], 0
    for item in items:
        if not isinstance(item, Mapping):
            continue
        token = str(item.get("token", ""))
        tokens.append(token)
        values.append(item.get("logprob", 0.0))
        top = item.get("top_logprobs")
        tops.append({str(t.get("token", "")): t.get("logprob", 0.0) for t in top if isinstance(t, Mapping)}
                    if isinstance(top, list) else {})
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def ollama_generate_to_openai(
    native: Mapping[str, object],
    *,
    completion_id: str,
    created: int,
    model: str,
    echo_prompt: str | None = None,
) -> dict[str, object]:
    """A non-streamed ``/api/generate`` answer as an OpenAI ``text_completion``."""
    text = native.get("response")
    text = text if isinstance(text, str) else ""
    if echo_prompt:
        text = echo_prompt + text
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"text": text, "index": 0, "logprobs": _legacy_logprobs(native.get("logprobs")),
                     "finish_reason": "length" if native.get("done_reason") == "length" else "stop"}],
        "usage": usage_from_ollama(native),
    }


def merge_completions(answers: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """One ``text_completion`` from the translated answers of each prompt, in prompt order.

    Choice ``i`` of prompt ``k`` gets index ``k * n + i`` (``n`` = choices per prompt), as OpenAI
    numbers them; usage is summed.
    """
    first = answers[0]
    choices: list[object] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for k, answer in enumerate(answers):
        own = answer.get("choices")
        own = own if isinstance(own, list) else []
        for i, choice in enumerate(own):
            choices.append({**choice, "index": k * len(own) + i})
        got = answer.get("usage")
        if isinstance(got, Mapping):
            for key in usage:
                value = got.get(key)
                usage[key] += value if isinstance(value, int) else 0
    return {**first, "choices": choices, "usage": usage}


class CompletionFanOut:
    """Streams of several prompts' ``/api/generate`` calls as one legacy completions SSE stream.

    ``feed(k, obj)`` takes one NDJSON object of prompt ``k``'s stream and returns the chunk(s) for it,
    with ``index`` ``k``; chunks of all prompts interleave as they arrive. Once every prompt is
    ``done``, ``end()`` gives the usage chunk (summed, when ``include_usage``) and ``[DONE]``.
    For the relay: ``has_output``, ``done``, ``usage``, ``finals``, ``keep_text``/``text_parts``.
    """

    def __init__(self, *, completion_id: str, created: int, model: str, prompts: int,
                 include_usage: bool = False, echo_prompts: Sequence[str | None] | None = None) -> None:
        head = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_ollama"}
        self._head = dumps(head)[:-1]
        self._usage_null = b',"usage":null' if include_usage else b""
        self.include_usage = include_usage
        self.has_output = False
        self.finals: list[Mapping[str, object] | None] = [None] * prompts
        self._echo = list(echo_prompts or [None] * prompts)
        self.keep_text = False
        self.text_parts: list[str] = []

    def _chunk(self, k: int, text: str, reason: str | None) -> bytes:
        finish = b'"' + reason.encode() + b'"' if reason else b"null"
        return (b"data: " + self._head + b',"choices":[{"text":' + dumps(text) + b',"index":' + str(k).encode()
                + b',"logprobs":null,"finish_reason":' + finish + b"}]" + self._usage_null + b"}\n\n")

    @property
    def done(self) -> bool:
        return all(final is not None for final in self.finals)

    @property
    def usage(self) -> dict[str, int]:
        total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for final in self.finals:
            for key, value in usage_from_ollama(final or {}).items():
                total[key] += value
        return total

    def feed(self, k: int, obj: Mapping[str, object]) -> bytes:
        text = obj.get("response")
        text = text if isinstance(text, str) else ""
        echo = self._echo[k]
        if echo:
            text, self._echo[k] = echo + text, None
        out = b""
        if text:
            if self.keep_text:
                self.text_parts.append(text)
            out += self._chunk(k, text, None)
            self.has_output = True
        if obj.get("done"):
            self.has_output = True
            self.finals[k] = obj
            out += self._chunk(k, "", "length" if obj.get("done_reason") == "length" else "stop")
        return out

    def end(self) -> bytes:
        out = b""
        if self.include_usage:
            out += b"data: " + self._head + b',"choices":[],"usage":' + dumps(self.usage) + b"}\n\n"
        return out + b"data: [DONE]\n\n"

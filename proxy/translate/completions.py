"""Legacy OpenAI completions <-> Ollama ``/api/generate``.

Pure. ``prompt`` is one string (or a list holding one string); several prompts would be several
answers, which one Ollama call cannot give, so they are a clear 400 like ``n`` > 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.translate.chat import usage_from_ollama
from proxy.translate.fields import (
    check_n,
    ollama_extras,
    opt_bool,
    opt_int,
    opt_str,
    sampling_options,
    wrong_type,
)

__all__ = ["completion_request_to_ollama", "ollama_generate_to_openai", "prompt_of"]


def prompt_of(body: Mapping[str, object]) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequestError("Missing required parameter: 'prompt'.", param="prompt", code="missing_field")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        if all(isinstance(p, str) for p in prompt):
            raise InvalidRequestError("Several prompts in one request are not supported; send one per request.",
                                      param="prompt", code="unsupported_parameter")
        raise InvalidRequestError("Token arrays as 'prompt' are not supported by Ollama backends.",
                                  param="prompt", code="unsupported_parameter")
    if not isinstance(prompt, str):
        raise wrong_type("prompt", "a string", prompt)
    return prompt


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

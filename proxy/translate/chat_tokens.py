"""Per-token logprobs and token usage of an Ollama answer, in OpenAI's shapes.

Pure. Shared by the OpenAI-shaped answers: chat completions (``proxy.translate.chat_answer`` and
``proxy.translate.stream``), legacy completions and the Responses API; ``MessagesStream`` gives the
relay its usage with these names too.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["logprobs_to_openai", "usage_from_ollama"]


def logprobs_to_openai(items: object) -> dict[str, object] | None:
    """Ollama's per-token logprobs to OpenAI's ``{"content": [...]}`` (None when there are none)."""
    if not isinstance(items, list) or not items:
        return None

    def entry(item: Mapping[str, object]) -> dict[str, object]:
        token = item.get("token", "")
        raw = item.get("bytes")
        return {"token": token, "logprob": item.get("logprob", 0.0),
                "bytes": raw if isinstance(raw, list) else list(str(token).encode())}

    content = []
    for item in items:
        if isinstance(item, Mapping):
            row = entry(item)
            tops = item.get("top_logprobs")
            row["top_logprobs"] = [entry(t) for t in tops if isinstance(t, Mapping)] if isinstance(tops, list) else []
            content.append(row)
    return {"content": content, "refusal": None}


def usage_from_ollama(native: Mapping[str, object]) -> dict[str, int]:
    prompt = native.get("prompt_eval_count") or 0
    completion = native.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,  # type: ignore[dict-item]
            "total_tokens": prompt + completion}  # type: ignore[operator]

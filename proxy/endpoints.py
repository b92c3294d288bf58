"""The model endpoints in one table: what each client-facing path calls on either kind of backend.

One ``Endpoint`` per OpenAI path: the Ollama path and the OpenAI-compatible path it maps to, the
pure translators both ways, the stream translator, and the per-request options the answer
translators take. The handlers (``proxy.handlers.generate``, ``proxy.handlers.embeddings``) and
shadow traffic (``proxy.background.shadow``) read this table, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.translate.chat_answer import ollama_chat_to_openai
from proxy.translate.chat_request import chat_request_to_ollama
from proxy.translate.chat_tools import forced_tool_of
from proxy.translate.completions import completion_request_to_ollama, ollama_generate_to_openai, prompt_of
from proxy.translate.embeddings import embedding_request_to_ollama, encoding_of, ollama_embed_to_openai
from proxy.translate.stream import ChatStream, CompletionStream

__all__ = ["Endpoint", "CHAT", "COMPLETION", "EMBEDDING", "ENDPOINTS", "by_name"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """What one client-facing model endpoint does on an Ollama and on an OpenAI-compatible backend."""

    name: str  # "chat" | "completion" | "embedding": the key shadows and logs use
    path: str  # the client-facing path
    ollama_path: str
    openai_path: str  # appended to an openai backend's base URL
    id_prefix: str
    to_ollama: Callable[..., dict[str, object]]  # (body, *, model, default_options, default_keep_alive)
    from_ollama: Callable[..., dict[str, object]]  # the whole answer, translated back
    stream: type[Any] | None  # the NDJSON -> SSE translator (None: never streamed)
    options: Callable[[Mapping[str, object]], dict[str, object]]  # extra keywords for the answer translators


def _chat_options(body: Mapping[str, object]) -> dict[str, object]:
    # a forced tool choice comes back from Ollama as constrained content: the answer side makes it a call
    return {"parallel_tool_calls": body.get("parallel_tool_calls") is not False, "forced": forced_tool_of(body)}


def _completion_options(body: Mapping[str, object]) -> dict[str, object]:
    return {"echo_prompt": prompt_of(body) if body.get("echo") is True else None}


def _embedding_options(body: Mapping[str, object]) -> dict[str, object]:
    return {"encoding": encoding_of(body)}


CHAT = Endpoint(name="chat", path="/v1/chat/completions", ollama_path="/api/chat", openai_path="/chat/completions",
                id_prefix="chatcmpl-", to_ollama=chat_request_to_ollama, from_ollama=ollama_chat_to_openai,
                stream=ChatStream, options=_chat_options)
COMPLETION = Endpoint(name="completion", path="/v1/completions", ollama_path="/api/generate",
                      openai_path="/completions", id_prefix="cmpl-", to_ollama=completion_request_to_ollama,
                      from_ollama=ollama_generate_to_openai, stream=CompletionStream, options=_completion_options)
EMBEDDING = Endpoint(name="embedding", path="/v1/embeddings", ollama_path="/api/embed", openai_path="/embeddings",
                     id_prefix="", to_ollama=embedding_request_to_ollama, from_ollama=ollama_embed_to_openai,
                     stream=None, options=_embedding_options)
ENDPOINTS = (CHAT, COMPLETION, EMBEDDING)
_BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}


def by_name(name: str) -> Endpoint:
    return _BY_NAME[name]

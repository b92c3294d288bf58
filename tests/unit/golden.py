"""Run one golden vector through the pure translators (shared by the test and the generator)."""

from __future__ import annotations

from typing import Any

from proxy.translate.chat_answer import ollama_chat_to_openai
from proxy.translate.chat_request import chat_request_to_ollama
from proxy.translate.completions import completion_request_to_ollama, ollama_generate_to_openai
from proxy.translate.embeddings import embedding_request_to_ollama, ollama_embed_to_openai
from proxy.translate.stream import ChatStream, CompletionStream

PINNED = {"completion_id": "chatcmpl-test", "created": 1700000000}


def run(case: dict[str, Any]) -> Any:
    kind, given, kwargs = case["kind"], case["input"], case.get("kwargs", {})
    if kind == "chat_request":
        return chat_request_to_ollama(given, **kwargs)
    if kind == "completion_request":
        return completion_request_to_ollama(given, **kwargs)
    if kind == "embedding_request":
        return embedding_request_to_ollama(given, **kwargs)
    if kind == "chat_response":
        return ollama_chat_to_openai(given, **PINNED, **kwargs)
    if kind == "completion_response":
        return ollama_generate_to_openai(given, **PINNED, **kwargs)
    if kind == "embedding_response":
        return ollama_embed_to_openai(given, **kwargs)
    if kind in ("chat_stream", "completion_stream"):
        cls = ChatStream if kind == "chat_stream" else CompletionStream
        stream = cls(**PINNED, **kwargs)
        return [stream.feed(line).decode() for line in given]
    raise ValueError(kind)

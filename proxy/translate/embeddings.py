"""OpenAI embeddings <-> Ollama ``/api/embed``.

Pure. The OpenAI Python SDK asks for ``encoding_format: "base64"`` by default and decodes the string
as little-endian float32; answering floats to such a request silently turns 768 dimensions into 192
(BerriAI/litellm#42426), so the encoding is honoured exactly.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping, Sequence

from proxy.errors import InvalidRequestError
from proxy.translate.fields import ollama_extras, opt_int, opt_str, wrong_type

__all__ = ["MAX_INPUTS", "TOKEN_ARRAY_FIX", "embedding_request_to_ollama", "ollama_embed_to_openai", "encoding_of",
           "float32_base64", "token_inputs"]

MAX_INPUTS = 2048
TOKEN_ARRAY_FIX = ("Token arrays as 'input' cannot be decoded by this gateway (its tokenizer is not installed); "
                   "send text. With LangChain's OpenAIEmbeddings set check_embedding_ctx_length=False.")
_MAX_TOKEN_ID = 1 << 20


def token_inputs(body: Mapping[str, object]) -> list[list[int]] | None:
    """The token-id arrays of a token-array ``input`` (one array or a list of them), else None.

    LangChain's ``OpenAIEmbeddings`` sends these by default (it tokenizes with tiktoken to split long
    texts). Ids must be integers in [0, 2**20); anything else is a 400 naming ``input``.
    """
    raw = body.get("input")
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(item, int) and not isinstance(item, bool) for item in raw):
        arrays = [raw]
    elif all(isinstance(item, list) for item in raw):
        arrays = raw
    else:
        return None
    if len(arrays) > MAX_INPUTS:
        raise InvalidRequestError(f"Invalid 'input': at most {MAX_INPUTS} items.", param="input")
    for i, ids in enumerate(arrays):
        if not ids or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < _MAX_TOKEN_ID for t in ids):
            raise InvalidRequestError(f"Invalid 'input[{i}]': a token array must be a non-empty list of token ids.",
                                      param="input")
    return [list(ids) for ids in arrays]  # type: ignore[arg-type]


def encoding_of(body: Mapping[str, object]) -> str:
    fmt = opt_str(body, "encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequestError(
            f"Invalid value for 'encoding_format': {fmt!r}. Supported values: 'float', 'base64'.",
            param="encoding_format",
        )
    return fmt


def embedding_request_to_ollama(
    body: Mapping[str, object],
    *,
    model: str,
    default_options: Mapping[str, object] = {},
    default_keep_alive: str | int | float | None = None,
) -> dict[str, object]:
    """Translate an OpenAI embeddings request (text input; the shell decodes token arrays first).

    Token-array input left undecoded is a 400 that names the fix (``TOKEN_ARRAY_FIX``).
    """
    raw = body.get("input")
    if raw is None:
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input", code="missing_field")
    if isinstance(raw, str):
        inputs: str | list[str] = raw
    elif isinstance(raw, list):
        if not raw:
            raise InvalidRequestError("Invalid 'input': empty array.", param="input")
        if len(raw) > MAX_INPUTS:
            raise InvalidRequestError(f"Invalid 'input': at most {MAX_INPUTS} items.", param="input")
        if not all(isinstance(item, str) for item in raw):
            if all(isinstance(item, (int, list)) and not isinstance(item, bool) for item in raw):
                raise InvalidRequestError(TOKEN_ARRAY_FIX, param="input", code="unsupported_parameter")
            raise wrong_type("input", "a string or an array of strings", raw)
        inputs = list(raw)  # type: ignore[arg-type]
    else:
        raise wrong_type("input", "a string or an array of strings", raw)
    encoding_of(body)
    native: dict[str, object] = {"model": model, "input": inputs}
    dimensions = opt_int(body, "dimensions", 1, 65536)
    if dimensions is not None:
        native["dimensions"] = dimensions
    ollama_extras(body, native, {}, default_options=default_options, default_keep_alive=default_keep_alive)
    return native


def float32_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes of ``vector``, base64-encoded (what OpenAI sends)."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def ollama_embed_to_openai(native: Mapping[str, object], *, model: str, encoding: str) -> dict[str, object]:
    vectors = native.get("embeddings")
    if not isinstance(vectors, list):
        vectors = []
    data = [
        {"object": "embedding", "index": i,
         "embedding": float32_base64(vector) if encoding == "base64" else vector}
        for i, vector in enumerate(vectors)
    ]
    tokens = native.get("prompt_eval_count") or 0
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

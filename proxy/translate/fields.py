"""Typed reading of OpenAI request fields, and the sampling fields chat and completions share.

Pure. Every wrong type or absurd value raises ``InvalidRequestError`` naming the field in ``param``.
Fields the client did not send are not invented: Ollama's own /v1 layer forces ``temperature`` and
``top_p`` to 1.0, overriding Modelfile defaults; we send only what the client sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from proxy.errors import InvalidRequestError

__all__ = [
    "objects",
    "token_count",
    "ANSWER_NEUTRAL_FIELDS",
    "ANSWER_CHANGING_FIELDS",
    "check_openai_only_fields",
    "MAX_TOKENS_LIMIT",
    "SEED_MAX",
    "SEED_MIN",
    "opt_bool",
    "opt_int",
    "opt_number",
    "opt_str",
    "require_str",
    "sampling_options",
    "ollama_extras",
    "check_n",
    "wrong_type",
]

MAX_TOKENS_LIMIT = 1_048_576
# Ollama's seed is a Go int (64-bit): anything wider cannot be sent, and orjson cannot even
# serialise an integer past 64 bits (that used to surface as a 500)
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def token_count(value: object) -> int:
    """A token count from a backend's answer (Ollama's ``eval_count``, a usage field): a non-negative
    int, anything else 0 (a bool is not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def wrong_type(param: str, expected: str, value: object) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)}.",
        param=param,
        code="invalid_type",
    )


def objects(items: list[object], param: str) -> Iterator[tuple[str, Mapping[str, object]]]:
    """``(f"{param}[i]", item)`` for each item of a list that must hold objects; a 400 naming the
    first item that is not one."""
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if not isinstance(item, Mapping):
            raise wrong_type(where, "an object", item)
        yield where, item


def require_str(body: Mapping[str, object], key: str, param: str | None = None) -> str:
    value = body.get(key)
    name = param or key
    if value is None:
        raise InvalidRequestError(f"Missing required parameter: '{name}'.", param=name, code="missing_field")
    if not isinstance(value, str):
        raise wrong_type(name, "a string", value)
    return value


def opt_str(body: Mapping[str, object], key: str, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise wrong_type(param or key, "a string", value)


def opt_bool(body: Mapping[str, object], key: str, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise wrong_type(param or key, "a boolean", value)


def opt_number(
    body: Mapping[str, object], key: str, lo: float | None = None, hi: float | None = None,
    param: str | None = None,
) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(name, "a number", value)
    if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidRequestError(
            f"Invalid value for '{name}': {value} is outside the allowed range [{lo}, {hi}].",
            param=name,
        )
    return value


def opt_int(
    body: Mapping[str, object], key: str, lo: int | None = None, hi: int | None = None,
    param: str | None = None,
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(name, "an integer", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and value < lo:
            message = f"Invalid value for '{name}': {value} is less than the minimum of {lo}."
        else:
            message = f"Invalid value for '{name}': {value} is greater than the maximum of {hi}."
        raise InvalidRequestError(message, param=name)
    return value


ANSWER_NEUTRAL_FIELDS = ("verbosity", "service_tier", "store", "metadata", "prompt_cache_key",
                         "prompt_cache_retention", "safety_identifier", "user", "prediction")
"""OpenAI chat fields accepted (their types checked) and ignored: they do not change what Ollama answers.

``verbosity`` is a hint Ollama has no knob for; ``service_tier``, ``store``, ``metadata``, the prompt
cache keys, ``safety_identifier`` and ``user`` are about OpenAI's billing, storage and abuse checks
(``user`` is also the gateway's sticky key); ``prediction`` (predicted outputs) only makes OpenAI
faster, never different.
"""

ANSWER_CHANGING_FIELDS = ("modalities", "audio", "web_search_options", "functions", "function_call",
                          "logit_bias")
"""Fields that would change the answer and that Ollama cannot honour: a 400 naming the field.

``modalities`` other than ``["text"]`` and ``audio`` ask for spoken output, ``web_search_options``
for a searched answer, ``functions``/``function_call`` for the legacy function calling (``tools``
and ``tool_choice`` work), a non-empty ``logit_bias`` for banned or favoured tokens.
"""

_VERBOSITY = ("low", "medium", "high")


def _unsupported(param: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}' is not supported by this gateway's Ollama backends: {why}.",
                               param=param, code="unsupported_parameter")


_OPENAI_ONLY_KEYS = frozenset({
    "verbosity", "service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "user", "store",
    "metadata", "prediction", "web_search_options", "audio", "logit_bias", "modalities", "functions", "function_call"})
_SAMPLING_KEYS = frozenset({"max_completion_tokens", "max_tokens", "temperature", "top_p", "frequency_penalty",
                            "presence_penalty", "seed", "stop"})


def check_openai_only_fields(body: Mapping[str, object]) -> None:
    """Check the fields of ``ANSWER_NEUTRAL_FIELDS`` (then ignored) and refuse ``ANSWER_CHANGING_FIELDS``."""
    if _OPENAI_ONLY_KEYS.isdisjoint(body):  # the usual body: none of them, nothing to check
        return
    verbosity = opt_str(body, "verbosity")
    if verbosity is not None and verbosity not in _VERBOSITY:
        raise InvalidRequestError(f"Invalid value for 'verbosity': {verbosity!r}. Supported values: 'low', "
                                  "'medium', 'high'.", param="verbosity")
    for key in ("service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "user"):
        opt_str(body, key)
    opt_bool(body, "store")
    for key in ("metadata", "prediction", "web_search_options", "audio", "logit_bias"):
        value = body.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise wrong_type(key, "an object", value)
    modalities = body.get("modalities")
    if modalities is not None:
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise wrong_type("modalities", "an array of strings", modalities)
        if any(m != "text" for m in modalities):
            raise _unsupported("modalities", "answers are text only")
    if body.get("audio") is not None:
        raise _unsupported("audio", "answers are text only")
    if body.get("web_search_options") is not None:
        raise _unsupported("web_search_options", "there is no web search")
    for key in ("functions", "function_call"):
        if body.get(key) is not None:
            raise _unsupported(key, "use 'tools' and 'tool_choice' instead")
    if body.get("logit_bias"):
        raise _unsupported("logit_bias", "Ollama cannot bias tokens")


def check_n(body: Mapping[str, object]) -> None:
    """``n`` > 1 asks for several choices, which one Ollama call cannot give: a clear 400."""
    n = opt_int(body, "n", 1, 128)
    if n is not None and n > 1:
        raise InvalidRequestError(
            "n > 1 is not supported by this gateway's Ollama backends; send n separate requests.",
            param="n",
            code="unsupported_parameter",
        )


def _stop(body: Mapping[str, object]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > 16:
            raise InvalidRequestError("Invalid value for 'stop': at most 16 sequences.", param="stop")
        return list(stop)  # type: ignore[arg-type]
    raise wrong_type("stop", "a string or an array of strings", stop)


def sampling_options(body: Mapping[str, object]) -> dict[str, object]:
    """Ollama ``options`` for the OpenAI sampling fields the client actually sent."""
    options: dict[str, object] = {}
    if _SAMPLING_KEYS.isdisjoint(body):
        return options
    max_tokens = opt_int(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = opt_int(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for key, lo, hi in (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("frequency_penalty", -2.0, 2.0),
        ("presence_penalty", -2.0, 2.0),
    ):
        value = opt_number(body, key, lo, hi)
        if value is not None:
            options[key] = value
    seed = opt_int(body, "seed", SEED_MIN, SEED_MAX)
    if seed is not None:
        options["seed"] = seed
    stop = _stop(body)
    if stop is not None:
        options["stop"] = stop
    return options


def ollama_extras(
    body: Mapping[str, object],
    native: dict[str, object],
    options: dict[str, object],
    *,
    default_options: Mapping[str, object],
    default_keep_alive: str | int | float | None,
) -> None:
    """Apply the Ollama-only knobs (``options``, ``keep_alive``, ``think``) and the route's defaults.

    The client wins over the route: route ``options`` fill only keys the client left unset.
    OpenAI SDKs send these through ``extra_body={"options": {"num_ctx": 8192}, "keep_alive": "10m"}``.
    """
    extra = body.get("options")
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise wrong_type("options", "an object", extra)
        for key, value in extra.items():
            options.setdefault(str(key), value)
    for key, value in default_options.items():
        options.setdefault(key, value)
    keep_alive = body.get("keep_alive")
    if keep_alive is None:
        keep_alive = default_keep_alive
    elif isinstance(keep_alive, bool) or not isinstance(keep_alive, (str, int, float)):
        raise wrong_type("keep_alive", "a duration string or a number of seconds", keep_alive)
    if keep_alive is not None:
        native["keep_alive"] = keep_alive
    think = body.get("think")
    if think is not None:
        if not isinstance(think, (bool, str)):
            raise wrong_type("think", "a boolean or one of low, medium, high", think)
        native["think"] = think
    if options:
        native["options"] = options

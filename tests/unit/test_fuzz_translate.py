"""Property-based fuzz of the request translators: any JSON-ish body gives a dict or a 4xx ProxyError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import ProxyError
from proxy.jsonio import dumps
from proxy.translate.chat_request import chat_request_to_ollama
from proxy.translate.completions import completion_request_to_ollama
from proxy.translate.embeddings import embedding_request_to_ollama
from proxy.translate.responses_request import responses_request_to_ollama

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# JSON scalars, including the awkward ones: huge and negative numbers, NaN-free floats, lone
# surrogates are impossible in JSON from orjson, so text is any valid unicode
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
image_urls = st.sampled_from([PNG, "data:image/png;base64,!!!", "data:text/html;base64,PGI+",
                              "data:image/png;base64,", "http://example.com/a.png", "ftp://x", ""]) | json_values
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20) | json_values}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": st.fixed_dictionaries({"url": image_urls}) | json_values}),
    st.dictionaries(st.sampled_from(["type", "text", "image_url", "refusal"]), json_values, max_size=3),
)
tool_calls = st.lists(st.fixed_dictionaries({
    "id": json_values, "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": st.text(max_size=8) | json_values,
                                       "arguments": st.sampled_from(["{}", '{"a": 1}', "not json", "[1]", ""])
                                       | json_values})}), max_size=3)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "bogus"]) | json_values},
    optional={"content": st.text(max_size=20) | st.lists(parts, max_size=3) | json_values,
              "tool_calls": tool_calls | json_values, "tool_call_id": json_values, "name": json_values,
              "reasoning_content": json_values}), max_size=5) | json_values
common = {
    "model": st.text(max_size=10) | json_values, "stream": st.booleans() | json_values,
    "max_tokens": st.integers(min_value=-5, max_value=2**40) | json_values,
    "max_completion_tokens": st.integers(min_value=-5, max_value=10) | json_values,
    "temperature": st.floats(allow_nan=False) | json_values, "top_p": json_values, "n": json_values,
    "stop": json_values, "seed": json_values, "options": json_values, "keep_alive": json_values,
    "think": json_values, "stream_options": json_values, "frequency_penalty": json_values,
    "presence_penalty": json_values,
}
chat_bodies = st.fixed_dictionaries({}, optional={
    **common, "messages": messages, "tools": json_values, "tool_choice": json_values,
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "json_schema", "x"])},
                                             optional={"json_schema": json_values}) | json_values,
    "reasoning_effort": json_values, "reasoning": json_values, "logprobs": json_values,
    "top_logprobs": json_values, "parallel_tool_calls": json_values,
}) | st.dictionaries(st.text(max_size=10), json_values, max_size=6)
completion_bodies = st.fixed_dictionaries({}, optional={
    **common, "prompt": st.text(max_size=20) | st.lists(st.text(max_size=5), max_size=2) | json_values,
    "suffix": json_values, "echo": json_values, "logprobs": json_values, "best_of": json_values,
    "raw": json_values,
}) | st.dictionaries(st.text(max_size=10), json_values, max_size=6)
embedding_bodies = st.fixed_dictionaries({}, optional={
    "model": json_values, "input": st.text(max_size=10) | st.lists(st.text(max_size=5) | st.integers(0, 2**31), max_size=3)
    | json_values, "encoding_format": st.sampled_from(["float", "base64", "x"]) | json_values,
    "dimensions": json_values, "options": json_values, "keep_alive": json_values,
}) | st.dictionaries(st.text(max_size=10), json_values, max_size=6)
input_parts = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text"]), "text": st.text(max_size=20) | json_values}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": image_urls}, optional={"file_id": json_values}),
    st.dictionaries(st.sampled_from(["type", "text", "image_url", "refusal", "file_id"]), json_values, max_size=3),
)
input_items = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | json_values},
                          optional={"type": st.just("message"), "content": st.text(max_size=20)
                                    | st.lists(input_parts, max_size=3) | json_values}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": st.text(max_size=5) | json_values,
                           "name": st.text(max_size=8) | json_values,
                           "arguments": st.sampled_from(["{}", '{"a": 1}', "not json", "[1]", ""]) | json_values},
                          optional={"namespace": json_values}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": st.text(max_size=5) | json_values,
                           "output": st.text(max_size=10) | st.lists(input_parts, max_size=2) | json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["reasoning", "web_search_call", "item_reference", "bogus"])},
                          optional={"summary": json_values, "content": json_values, "encrypted_content": json_values}),
), max_size=5) | st.text(max_size=10) | json_values
responses_tools = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("function"), "name": st.text(max_size=8) | json_values},
                          optional={"parameters": json_values, "strict": json_values, "description": json_values}),
    st.fixed_dictionaries({"type": st.just("namespace"), "name": st.text(max_size=5) | json_values,
                           "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"),
                                                                    "name": st.text(max_size=5)}), max_size=2)
                           | json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["web_search", "mcp", "file_search", "custom"])}),
), max_size=3) | json_values
responses_bodies = st.fixed_dictionaries({}, optional={
    "model": st.text(max_size=10) | json_values, "input": input_items, "instructions": st.text(max_size=10) | json_values,
    "tools": responses_tools, "stream": json_values,
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"},
                                    {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                                                             "name": "f"}]}])
    | json_values,
    "text": st.fixed_dictionaries({}, optional={"format": st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema", "x"])}, optional={"schema": json_values})
        | json_values, "verbosity": json_values}) | json_values,
    "reasoning": st.fixed_dictionaries({}, optional={"effort": json_values, "summary": json_values}) | json_values,
    "max_output_tokens": json_values, "temperature": json_values, "top_p": json_values, "top_logprobs": json_values,
    "truncation": json_values, "metadata": json_values, "include": json_values, "store": json_values,
    "parallel_tool_calls": json_values, "options": json_values, "keep_alive": json_values,
}) | st.dictionaries(st.text(max_size=10), json_values, max_size=6)
defaults = st.fixed_dictionaries({"num_ctx": st.integers(1, 8192)}) | st.just({})


def check(translate: Callable[..., dict[str, object]], body: dict[str, Any], default_options: dict[str, Any]) -> None:
    try:
        out = translate(body, model="m:latest", default_options=default_options, default_keep_alive="5m")
    except ProxyError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        assert exc.message
        return
    assert isinstance(out, dict) and out["model"] == "m:latest"
    dumps(out)  # what goes to Ollama must serialise


@FUZZ
@given(body=chat_bodies, default_options=defaults)
def test_chat_translation_returns_a_dict_or_a_4xx(body: dict[str, Any], default_options: dict[str, Any]) -> None:
    """Any chat body translates to a serialisable /api/chat body or raises a 4xx ProxyError."""
    check(chat_request_to_ollama, body, default_options)


@FUZZ
@given(body=completion_bodies, default_options=defaults)
def test_completion_translation_returns_a_dict_or_a_4xx(body: dict[str, Any], default_options: dict[str, Any]) -> None:
    """Any completions body translates to an /api/generate body or raises a 4xx ProxyError."""
    check(completion_request_to_ollama, body, default_options)


@FUZZ
@given(body=embedding_bodies, default_options=defaults)
def test_embedding_translation_returns_a_dict_or_a_4xx(body: dict[str, Any], default_options: dict[str, Any]) -> None:
    """Any embeddings body translates to an /api/embed body or raises a 4xx ProxyError."""
    check(embedding_request_to_ollama, body, default_options)


@FUZZ
@given(body=responses_bodies, default_options=defaults)
def test_responses_translation_returns_a_dict_or_a_4xx(body: dict[str, Any], default_options: dict[str, Any]) -> None:
    """Any Responses body translates to a serialisable /api/chat body or raises a 4xx ProxyError."""
    check(lambda b, **kw: responses_request_to_ollama(b, **kw).native, body, default_options)


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}] * 10_000}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 1e308}, "temperature"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}]}]},
     "messages[0].content[0].image_url.url"),
])
def test_absurd_chat_values_name_the_field(body: dict[str, Any], param: str) -> None:
    """Absurd values (10,000 messages, negative max_tokens, bad base64, SVG) are 400s naming the field."""
    with pytest.raises(ProxyError) as info:
        chat_request_to_ollama(body, model="m")
    assert info.value.status == 400 and info.value.param == param

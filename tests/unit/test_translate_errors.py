"""Bad requests: each raises InvalidRequestError naming the offending field."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidRequestError
from proxy.translate.chat_request import chat_request_to_ollama
from proxy.translate.completions import completion_request_to_ollama
from proxy.translate.embeddings import embedding_request_to_ollama

USER = [{"role": "user", "content": "x"}]
PNG = "iVBORw0KGgoAAAAA"

CHAT_CASES = [
    ({"messages": None}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"seed": 1.5}, "seed"),
    ({"seed": 18446744073709551616}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": 1.8446744073709552e19}, "seed"),
    ({"seed": 1e308}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"seed": -9.3e18}, "seed"),
    ({"stop": [1]}, "stop"),
    ({"n": 3}, "n"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "function", "function": {"name": "g"}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice.function.name"),
    ({"tool_choice": {"type": "function"}, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tool_choice.function"),
    ({"tool_choice": {"type": "custom", "custom": {"name": "f"}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "any", "tools": []}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice.allowed_tools.mode"),
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "g"}}]}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice.allowed_tools.tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning": {"effort": "ultra-max"}}, "reasoning.effort"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"options": [1]}, "options"),
    ({"keep_alive": True}, "keep_alive"),
    ({"stream": "yes"}, "stream"),
]


@pytest.mark.parametrize(("extra", "param"), CHAT_CASES, ids=[c[1] + str(i) for i, c in enumerate(CHAT_CASES)])
def test_chat_request_errors_name_the_field(extra, param):
    """Each malformed chat field gives a 400 whose param is that field."""
    with pytest.raises(InvalidRequestError) as info:
        chat_request_to_ollama({"model": "m", "messages": USER, **extra}, model="m")
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": []}, "prompt"),  # several prompts are fanned out by the shell; none is an error
    ({"prompt": [1, 2]}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": "x", "best_of": 2}, "best_of"),
])
def test_completion_request_errors(body, param):
    """No prompt, token prompts and best_of > 1 are clear 400s."""
    with pytest.raises(InvalidRequestError) as info:
        completion_request_to_ollama({"model": "m", **body}, model="m")
    assert info.value.param == param


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [1, 2, 3]}, "input"),
    ({"input": [[1, 2], [3]]}, "input"),
    ({"input": []}, "input"),
    ({"input": None}, "input"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
])
def test_embedding_request_errors(body, param):
    """Token arrays, empty input and unknown encodings are clear 400s."""
    with pytest.raises(InvalidRequestError) as info:
        embedding_request_to_ollama({"model": "m", **body}, model="m")
    assert info.value.param == param

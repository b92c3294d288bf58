"""Pure translation of what frameworks send by default: token arrays, several prompts, new chat fields."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidRequestError
from proxy.translate.completions import merge_completions, prompts_of
from proxy.translate.embeddings import embedding_request_to_ollama, token_inputs


def test_undecoded_token_arrays_name_the_langchain_fix():
    """Token arrays that reach the translator (no local encoding) are a 400 that says what to change."""
    with pytest.raises(InvalidRequestError) as info:
        embedding_request_to_ollama({"model": "m", "input": [[9906, 1917]]}, model="m")
    assert info.value.param == "input" and info.value.code == "unsupported_parameter"
    assert "check_embedding_ctx_length=False" in info.value.message


@pytest.mark.parametrize(("value", "arrays"), [
    ("text", None), (["a", "b"], None), ([1, 2], [[1, 2]]), ([[1], [2, 3]], [[1], [2, 3]]),
])
def test_token_inputs_reads_one_or_several_arrays(value, arrays):
    """One array of ids is one input; a list of arrays is several; text is not token input."""
    assert token_inputs({"input": value}) == arrays


def test_prompts_of_reads_one_or_several_prompts():
    """A string is one prompt; a list of strings keeps its order."""
    assert prompts_of({"prompt": "a"}) == ["a"]
    assert prompts_of({"prompt": ["a", "b"]}) == ["a", "b"]


def test_merge_completions_indexes_choices_per_prompt_and_sums_usage():
    """Choice i of prompt k gets index k * n + i; usage is summed."""
    one = {"id": "c", "choices": [{"text": "x", "index": 0}],
           "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    two = {"id": "c", "choices": [{"text": "y", "index": 0}],
           "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}}
    merged = merge_completions([one, two])
    assert merged["choices"] == [{"text": "x", "index": 0}, {"text": "y", "index": 1}]
    assert merged["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}

"""The pure rules behind Ollama's native door (``proxy.translate.native``), as tables: which attempts
take a native call, how backends' model lists merge, the version reported, route defaults, timings."""

from __future__ import annotations

from typing import Any

import pytest

from policies.plan import plan
from proxy.config import parse_config
from proxy.errors import InvalidRequestError
from proxy.translate.native import (
    final_timings,
    lowest_version,
    merge_models,
    native_attempts,
    native_backends,
    native_body,
    with_model_field,
)

BACKENDS = [{"name": "gpu1", "type": "ollama", "url": "http://gpu1:11434"},
            {"name": "gpu2", "type": "ollama", "url": "http://gpu2:11434"},
            {"name": "cloud", "type": "openai", "url": "https://api.example.com/v1"}]


def policy(*routes: dict[str, Any]) -> Any:
    return parse_config({"backends": BACKENDS, "routes": list(routes)}, {}).policy


def attempts_for(pol: Any, model: str, roll: float) -> list[tuple[tuple[str, ...], str, str]]:
    route_plan = plan(pol, model, key=None, roll=roll)
    assert route_plan is not None
    return [(a.target.backends, a.model, a.role) for a in native_attempts(route_plan, pol.backends, model)]


def test_openai_attempts_are_left_out_and_mixed_pools_narrowed():
    pol = policy({"name": "r", "models": ["m"], "targets": [{"backend": ["cloud", "gpu1"], "model": "llama3.2"}],
                  "fallback": [{"backend": "cloud"}, {"backend": "gpu2"}]})
    assert attempts_for(pol, "m", 0.5) == [(("gpu1",), "llama3.2", "primary"), (("gpu2",), "m", "fallback")]


@pytest.mark.parametrize("roll, expected", [
    (0.1, [(("gpu2",), "qwen", "primary"), (("gpu1",), "llama", "fallback")]),  # the cloud arm: replaced by gpu2's
    (0.9, [(("gpu2",), "qwen", "primary"), (("gpu1",), "llama", "fallback")]),  # gpu2's arm itself
])
def test_a_cloud_split_arm_is_replaced_by_the_first_ollama_arm(roll, expected):
    pol = policy({"name": "r", "models": ["m"], "targets": [{"backend": "cloud", "weight": 1},
                                                            {"backend": "gpu2", "model": "qwen", "weight": 1}],
                  "fallback": [{"backend": "gpu1", "model": "llama"}]})
    assert attempts_for(pol, "m", roll) == expected


def test_a_route_only_on_clouds_leaves_no_attempt():
    pol = policy({"name": "r", "models": ["m"], "targets": [{"backend": "cloud"}]})
    assert attempts_for(pol, "m", 0.5) == []


def entry(name: str, size: int = 1) -> dict[str, Any]:
    return {"name": name, "model": name, "size": size, "details": {"family": "llama"}}


def test_merge_lists_aliases_under_their_name_then_installed_models_once():
    pol = policy({"name": "alias", "models": ["assistant", "ghost"],
                  "targets": [{"backend": "gpu1", "model": "llama3.2"}]},
                 {"name": "cloudy", "models": ["gpt-4o", "cloud-*"], "targets": [{"backend": "cloud"}]},
                 {"name": "rest", "models": ["*"], "targets": [{"backend": ["gpu1", "gpu2"]}]})
    listings = [("gpu1", [entry("llama3.2:latest", 3), entry("qwen2.5:7b", 7)]),
                ("gpu2", [entry("qwen2.5:7b", 8), entry("cloud-only:1b"), entry("phi4:14b")])]
    merged = merge_models(pol, listings, lambda name: True)
    assert [(m["name"], m["model"], m["size"]) for m in merged] == [
        ("assistant", "assistant", 3), ("ghost", "ghost", 3),  # both aliases map to llama3.2 (:latest found)
        ("llama3.2:latest", "llama3.2:latest", 3), ("qwen2.5:7b", "qwen2.5:7b", 7), ("phi4:14b", "phi4:14b", 1)]
    allowed = merge_models(pol, listings, lambda name: name.startswith(("assistant", "qwen")))
    assert [m["name"] for m in allowed] == ["assistant", "qwen2.5:7b"]


def test_merge_skips_an_alias_whose_model_is_nowhere():
    pol = policy({"name": "alias", "models": ["assistant"], "targets": [{"backend": "gpu2", "model": "missing"}]})
    assert merge_models(pol, [("gpu1", [entry("missing")]), ("gpu2", [])], lambda name: True) == []


@pytest.mark.parametrize("versions, lowest", [
    (["0.33.10", "0.33.9", "0.4.0"], "0.4.0"),
    (["0.6.2-rc1", "0.6.10"], "0.6.2-rc1"),
    ([None, 7, ""], None),
    (["0.5.0"], "0.5.0"),
])
def test_lowest_version(versions, lowest):
    assert lowest_version(versions) == lowest


def test_native_body_fills_route_defaults_only_where_unset():
    assert native_body({"model": "m", "options": {"temperature": 0.7}}, default_options={"num_ctx": 8192,
                                                                                          "temperature": 0.1},
                       default_keep_alive="30m") == {"model": "m", "options": {"num_ctx": 8192, "temperature": 0.7},
                                                     "keep_alive": "30m"}
    assert native_body({"model": "m", "keep_alive": 0}, default_options={}, default_keep_alive="30m") == {
        "model": "m", "keep_alive": 0}
    with pytest.raises(InvalidRequestError) as info:
        native_body({"model": "m", "options": "fast"}, default_options={}, default_keep_alive=None)
    assert (info.value.param, info.value.message) == ("options", "Invalid type for 'options': expected an object, "
                                                                 "but got string.")


def test_final_timings_drop_the_answer_and_count_tokens():
    final = {"model": "m", "done": True, "response": "x", "context": [1, 2, 3], "load_duration": 5,
             "prompt_eval_count": 7, "eval_count": True}
    assert final_timings(final) == ({"model": "m", "done": True, "load_duration": 5, "prompt_eval_count": 7,
                                     "eval_count": True}, 7, 0)


def test_name_is_read_as_model_and_route_backends_in_config_order():
    assert with_model_field({"name": "a"}) == {"model": "a"}
    assert with_model_field({"name": "a", "model": "b"}) == {"name": "a", "model": "b"}
    pol = policy({"name": "r", "models": ["m*"], "targets": [{"backend": ["cloud", "gpu2"]}],
                  "fallback": [{"backend": "gpu1"}, {"backend": "gpu2"}]})
    assert (native_backends(pol, "mine"), native_backends(pol, "other")) == (("gpu2", "gpu1"), ())

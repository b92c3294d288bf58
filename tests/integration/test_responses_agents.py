"""The openai-agents SDK against the gateway: an agent with a function tool runs to its final answer
over the Responses API (its default model class, ``OpenAIResponsesModel``)."""

from __future__ import annotations

import json

import httpx
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool, set_tracing_disabled

from tests.fakes import ollama as o

CALL = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    set_tracing_disabled(True)  # the SDK would export traces to OpenAI otherwise


@pytest.fixture
async def client(gateway):
    async with gateway.client() as client:
        yield client


def _agent(client, seen: list[str]) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    model = OpenAIResponsesModel(model="llama3.2", openai_client=client)
    return Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather], model=model)


@pytest.mark.parametrize("stream", [False, True])
async def test_agent_calls_its_tool_and_answers(fake_ollama, client, stream):
    """The model asks for get_weather, the SDK runs it and sends the output back, the model answers."""
    fake_ollama.fake.script("/api/chat", o.ok("", tool_calls=CALL), o.ok("It is sunny in Paris."))
    seen: list[str] = []
    agent = _agent(client, seen)
    if stream:
        result = Runner.run_streamed(agent, "Weather in Paris?")
        async for _ in result.stream_events():
            pass
    else:
        result = await Runner.run(agent, "Weather in Paris?")
    assert result.final_output == "It is sunny in Paris."
    assert seen == ["Paris"]
    first, second = fake_ollama.fake.bodies("/api/chat")
    assert first["messages"] == [{"role": "system", "content": "Answer with the tool."},
                                 {"role": "user", "content": "Weather in Paris?"}]
    assert first["tools"][0]["function"]["name"] == "get_weather"
    call, output = second["messages"][2:]
    assert call["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert output == {"role": "tool", "content": "sunny in Paris", "tool_call_id": call["tool_calls"][0]["id"],
                      "tool_name": "get_weather"}


@pytest.mark.parametrize("stream", [False, True])
async def test_agent_continues_with_previous_response_id(fake_ollama, gateway, stream):
    """``auto_previous_response_id``: the second model call sends only the tool output and the stored id."""
    fake_ollama.fake.script("/api/chat", o.ok("", tool_calls=CALL), o.ok("Sunny."))
    sent: list[dict] = []

    async def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    seen: list[str] = []
    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http, \
            gateway.client(http_client=http) as client:
        agent, settings = _agent(client, seen), RunConfig(model_settings=ModelSettings(store=True))
        if stream:
            result = Runner.run_streamed(agent, "Weather in Paris?", auto_previous_response_id=True,
                                         run_config=settings)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, "Weather in Paris?", auto_previous_response_id=True, run_config=settings)
    assert result.final_output == "Sunny." and seen == ["Paris"]
    assert "previous_response_id" not in sent[0]
    assert sent[1]["previous_response_id"].startswith("resp_")
    assert [item["type"] for item in sent[1]["input"]] == ["function_call_output"]
    second = fake_ollama.fake.bodies("/api/chat")[1]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert json.loads(json.dumps(second["messages"][3]["content"])) == "sunny in Paris"

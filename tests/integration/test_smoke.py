"""A first end-to-end pass: the official SDK through the gateway to the fake Ollama."""

from __future__ import annotations


async def test_chat_roundtrip(gateway, fake_ollama):
    """A plain chat comes back in OpenAI's shape with Ollama's answer."""
    async with gateway.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello world"
    assert fake_ollama.fake.bodies("/api/chat")[0]["model"] == "llama3.2"

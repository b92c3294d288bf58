"""Pure OpenAI <-> Ollama translators. No aiohttp, no yaml, no environment: plain values in and out."""

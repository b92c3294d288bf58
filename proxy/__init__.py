"""An OpenAI-compatible gateway for Ollama: OpenAI wire format in front, Ollama's native API behind.

Public surface: ``create_app`` (the aiohttp application for a ``Config``), ``load_config`` and
``parse_config`` (strict YAML config into frozen dataclasses), and ``Config``.
"""

from __future__ import annotations

from proxy.app import create_app
from proxy.config import Config, ConfigError, load_config, parse_config

__all__ = ["create_app", "load_config", "parse_config", "Config", "ConfigError"]

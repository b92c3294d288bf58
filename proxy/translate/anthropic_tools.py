"""Anthropic Messages ``tools``, ``mcp_servers`` and ``tool_choice``: what Ollama can be given.

Pure. The request as a whole is translated by ``proxy.translate.anthropic_request``.

- ``tools``: custom tools -> Ollama functions (``input_schema`` as ``parameters``; ``cache_control``,
  ``strict``, ``input_examples``, ``eager_input_streaming`` ignored; ``defer_loading`` tools are
  shown at once, tool search being an Anthropic-side tool). Anthropic-defined
  tools (any other ``type``: ``web_search_*``, ``bash_*``, ``text_editor_*``, ``computer_*``, ...)
  and ``mcp_servers`` cannot run on Ollama: left out and listed in ``dropped``, or a 400 with
  ``refuse_server_tools``.
- ``tool_choice``: ``auto`` -> tools as given; ``none`` -> no tools sent; ``any`` / ``tool`` ->
  forced with ``proxy.translate.tools`` (no tools, a schema ``format``, an instruction; the content
  comes back as a ``tool_use`` block). ``disable_parallel_tool_use`` keeps the first call only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.errors import InvalidRequestError
from proxy.translate.fields import opt_bool, opt_str, require_str, wrong_type
from proxy.translate.tools import ForcedTool, forced_tool

__all__ = ["custom_tools", "ollama_tool", "tool_choice", "forced_choice"]

_CHOICES = frozenset({"auto", "any", "tool", "none"})


def _unsupported(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def custom_tools(body: Mapping[str, object], refuse: bool) -> tuple[list[Mapping[str, object]], list[str]]:
    """The custom tools (Anthropic shape, checked) and the names of those that cannot run here."""
    tools = body.get("tools")
    custom: list[Mapping[str, object]] = []
    dropped: list[str] = []
    seen: set[str] = set()
    if tools is not None and not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    for i, tool in enumerate(tools or []):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise wrong_type(where, "an object", tool)
        kind = tool.get("type")
        name = require_str(tool, "name", f"{where}.name")
        if name in seen:
            raise InvalidRequestError(f"Tool names must be unique: {name!r} is given twice.", param=f"{where}.name")
        seen.add(name)
        if kind not in (None, "custom"):
            if refuse:
                raise _unsupported(f"Tool {name!r} of type {kind!r} runs on Anthropic's servers; this gateway's "
                                   "Ollama backends cannot run it.", f"{where}.type")
            dropped.append(f"{name} ({kind})")
            continue
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise wrong_type(f"{where}.input_schema", "an object", schema)
        opt_str(tool, "description", f"{where}.description")
        custom.append(tool)
    servers = body.get("mcp_servers")
    if servers is not None and not isinstance(servers, list):
        raise wrong_type("mcp_servers", "an array", servers)
    for i, server in enumerate(servers or []):
        label = server.get("name") if isinstance(server, Mapping) else None
        if refuse:
            raise _unsupported("MCP servers are called by Anthropic's servers; this gateway's Ollama backends "
                               "cannot call them.", f"mcp_servers[{i}]")
        dropped.append(f"{label or i} (mcp_server)")
    return custom, dropped


def ollama_tool(tool: Mapping[str, object]) -> dict[str, object]:
    """A checked custom tool as an Ollama function (``input_schema`` as ``parameters``)."""
    function: dict[str, object] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def tool_choice(body: Mapping[str, object]) -> tuple[str, str | None, bool]:
    """``tool_choice`` as (kind, the tool's name for ``tool``, ``disable_parallel_tool_use``)."""
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None, False
    if not isinstance(choice, Mapping):
        raise wrong_type("tool_choice", "an object", choice)
    kind = choice.get("type")
    if kind not in _CHOICES:
        raise InvalidRequestError(f"Invalid value for 'tool_choice.type': {kind!r}. Supported: auto, any, tool, none.",
                                  param="tool_choice.type")
    single = opt_bool(choice, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use") or False
    name = require_str(choice, "name", "tool_choice.name") if kind == "tool" else None
    return str(kind), name, single


def forced_choice(kind: str, name: str | None, custom: Sequence[Mapping[str, object]]) -> ForcedTool | None:
    """The forced call for ``any`` / ``tool`` (None for ``auto`` and ``none``)."""
    if kind not in ("any", "tool"):
        return None
    return forced_tool(custom, name, param="tool_choice.name" if name else "tool_choice")

"""OpenAI chat ``tools`` and ``tool_choice``: the tools Ollama sees and the forced call.

Pure. The request as a whole is translated by ``proxy.translate.chat_request``. Only ``function``
tools are accepted. ``tool_choice``: absent or ``auto`` -> the tools as given; ``none`` -> no tools
sent (Ollama cannot be told not to call them); ``required``, a named function, or ``allowed_tools``
with mode ``required`` -> forced with ``proxy.translate.tools`` (no tools, a schema ``format``, an
instruction; the content comes back as that tool's call); ``allowed_tools`` with mode ``auto`` ->
the tools it lists.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.translate.fields import require_str, wrong_type
from proxy.translate.tools import ForcedTool, forced_tool

__all__ = ["tool_choice", "forced_tool_of"]


def _function_tools(body: Mapping[str, object]) -> list[Mapping[str, object]] | None:
    """The validated ``tools`` list (None when absent)."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise InvalidRequestError("Only tools of type 'function' are supported.", param=f"tools[{i}].type",
                                      code="unsupported_parameter")
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise wrong_type(f"tools[{i}].function", "an object", function)
        require_str(function, "name", f"tools[{i}].function.name")
    return tools


def _allowed(tools: list[Mapping[str, object]], allowed: object) -> tuple[list[Mapping[str, object]], str]:
    """``{"mode", "tools"}`` of an ``allowed_tools`` choice: the tools it keeps and its mode."""
    param = "tool_choice.allowed_tools"
    if not isinstance(allowed, Mapping):
        raise wrong_type(param, "an object", allowed)
    mode = allowed.get("mode")
    if mode not in ("auto", "required"):
        raise InvalidRequestError(f"Invalid value for '{param}.mode': {mode!r}. Supported: auto, required.",
                                  param=f"{param}.mode")
    listed = allowed.get("tools")
    if not isinstance(listed, list):
        raise wrong_type(f"{param}.tools", "an array", listed)
    names = set()
    for j, ref in enumerate(listed):
        function = ref.get("function") if isinstance(ref, Mapping) else None
        if not isinstance(function, Mapping):
            raise wrong_type(f"{param}.tools[{j}].function", "an object", function)
        names.add(require_str(function, "name", f"{param}.tools[{j}].function.name"))
    kept = [t for t in tools if t["function"]["name"] in names]  # type: ignore[index]
    return kept, str(mode)


def tool_choice(body: Mapping[str, object]) -> tuple[list[Mapping[str, object]] | None, ForcedTool | None]:
    """The tools Ollama sees (None: none) and the forced call, if ``tool_choice`` forces one."""
    tools = _function_tools(body)
    choice = body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise InvalidRequestError("'tool_choice' is set but no 'tools' were given.", param="tool_choice")
        return None, None
    if choice == "none" or not tools:
        return None, None  # OpenAI: the model must not call tools; Ollama cannot be told, so it does not see them.
    if choice in (None, "auto"):
        return tools, None
    if choice == "required":
        return None, forced_tool(tools, param="tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "function":
        function = choice.get("function")  # type: ignore[union-attr]
        if not isinstance(function, Mapping):
            raise wrong_type("tool_choice.function", "an object", function)
        name = require_str(function, "name", "tool_choice.function.name")
        return None, forced_tool(tools, name, param="tool_choice.function.name")
    if kind == "allowed_tools":
        kept, mode = _allowed(tools, choice.get("allowed_tools"))  # type: ignore[union-attr]
        if not kept:
            raise InvalidRequestError("'tool_choice.allowed_tools.tools' names none of the given tools.",
                                      param="tool_choice.allowed_tools.tools")
        return (None, forced_tool(kept, param="tool_choice")) if mode == "required" else (kept, None)
    raise InvalidRequestError(
        f"Invalid value for 'tool_choice': {choice!r}. Supported: none, auto, required, "
        '{"type": "function", "function": {"name": ...}} and {"type": "allowed_tools", ...}.',
        param="tool_choice",
    )


def forced_tool_of(body: Mapping[str, object]) -> ForcedTool | None:
    """The forced tool call a chat request asks for (``tool_choice`` required, named or allowed_tools required).

    Ollama cannot be told to call a tool, so a forced call is sent as a ``format`` constraining the
    answer to the tool's schema (see ``proxy.translate.tools``). The shell passes the result to
    ``ollama_chat_to_openai(..., forced=...)`` and ``ChatStream(..., forced=...)``, which turn the
    constrained content back into that tool's call.
    """
    return tool_choice(body)[1]

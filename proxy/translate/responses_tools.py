"""Responses API ``tools`` and ``tool_choice`` -> the tools Ollama sees, and the forced call if any.

Pure. Function tools become Ollama functions (``strict`` accepted: Ollama cannot enforce it on free
calls); namespace members are sent as ``namespace.member`` and recorded in ``namespaces`` so the answer
gives back ``name`` + ``namespace``. Hosted tools (``HOSTED_TOOLS``: ``web_search``, ``file_search``,
``mcp``, ...) are left out and listed in ``left_out``, or refused with ``hosted_tools="refuse"``.

``tool_choice``: ``"auto"`` sends the tools; ``"none"`` sends none (Ollama cannot be told not to
call); ``"required"``, ``{"type": "function", "name"}`` and ``allowed_tools`` in required mode are
forced calls (``proxy.translate.tools``): one call, the format constrains the answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.translate.fields import objects, opt_bool, opt_str, require_str, wrong_type
from proxy.translate.tools import ForcedTool, forced_tool

__all__ = ["HOSTED_TOOLS", "ollama_tools", "tool_choice"]

# tools OpenAI runs itself (or whose calls have shapes of their own): Ollama cannot run them
HOSTED_TOOLS = frozenset({
    "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11",
    "file_search", "code_interpreter", "computer", "computer_use_preview", "image_generation", "mcp",
    "local_shell", "shell", "apply_patch", "tool_search", "programmatic_tool_calling",
})


def _unsupported(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def _function_tool(tool: Mapping[str, object], where: str, prefix: str = "") -> dict[str, object]:
    name = require_str(tool, "name", f"{where}.name")
    description = opt_str(tool, "description", f"{where}.description")
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise wrong_type(f"{where}.parameters", "a JSON schema object", parameters)
    opt_bool(tool, "strict", f"{where}.strict")  # Ollama cannot enforce it on free calls; accepted
    function: dict[str, object] = {"name": prefix + name}
    if description:
        function["description"] = description
    function["parameters"] = parameters if parameters else {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def ollama_tools(body: Mapping[str, object], hosted_tools: str, left_out: list[str],
                 namespaces: dict[str, tuple[str, str]]) -> list[dict[str, object]]:
    """``tools`` as Ollama functions; hosted tools go to ``left_out``, namespace members to ``namespaces``."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    native: list[dict[str, object]] = []
    for where, tool in objects(tools, "tools"):
        kind = tool.get("type")
        if kind == "function":
            native.append(_function_tool(tool, where))
        elif kind == "namespace":
            space = require_str(tool, "name", f"{where}.name")
            members = tool.get("tools")
            if not isinstance(members, list):
                raise wrong_type(f"{where}.tools", "an array", members)
            for j, member in enumerate(members):
                if not isinstance(member, Mapping) or member.get("type") != "function":
                    raise _unsupported(f"{where}.tools[{j}].type", "Namespace members must be function tools here.")
                entry = _function_tool(member, f"{where}.tools[{j}]", f"{space}.")
                full = entry["function"]["name"]  # type: ignore[index]
                namespaces[full] = (space, full[len(space) + 1:])
                native.append(entry)
        elif isinstance(kind, str) and kind in HOSTED_TOOLS:
            if hosted_tools == "refuse":
                raise _unsupported(f"{where}.type", f"The hosted tool {kind!r} is not available with Ollama backends.")
            if kind not in left_out:
                left_out.append(kind)
        else:
            raise _unsupported(f"{where}.type", f"Unsupported tool type {kind!r}: use function or namespace tools.")
    return native


def tool_choice(choice: object, tools: list[dict[str, object]]) -> tuple[list[dict[str, object]], ForcedTool | None]:
    """The tools Ollama sees and the forced call, if ``tool_choice`` forces one."""
    if choice in (None, "auto"):
        return tools, None
    if choice == "none":
        return [], None  # OpenAI: no tool calls; Ollama cannot be told, so it does not see the tools
    if choice == "required":
        return [], forced_tool(tools, param="tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "function":
        name = require_str(choice, "name", "tool_choice.name")  # type: ignore[arg-type]
        return [], forced_tool(tools, name, param="tool_choice.name")
    if kind == "allowed_tools":
        mode = choice.get("mode")  # type: ignore[union-attr]
        if mode not in ("auto", "required"):
            raise InvalidRequestError(f"Invalid value for 'tool_choice.mode': {mode!r}. Supported: auto, required.",
                                      param="tool_choice.mode")
        listed = choice.get("tools")  # type: ignore[union-attr]
        if not isinstance(listed, list):
            raise wrong_type("tool_choice.tools", "an array", listed)
        names = {ref.get("name") for ref in listed if isinstance(ref, Mapping)}
        kept = [t for t in tools if t["function"]["name"] in names]  # type: ignore[index]
        return ([], forced_tool(kept, param="tool_choice.tools")) if mode == "required" else (kept, None)
    raise _unsupported("tool_choice", f"Unsupported 'tool_choice': {choice!r}. Supported: none, auto, required, "
                                      '{"type": "function", "name": ...} and {"type": "allowed_tools", ...}.')

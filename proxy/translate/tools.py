"""Forced tool choice on Ollama: constrain the answer to a tool's schema, read it back as a call.

Pure. Ollama has no ``tool_choice``: a model given tools decides for itself. A *forced* call
(OpenAI ``tool_choice: "required"`` or a named function, Anthropic ``tool_choice: {"type": "tool"}``
or ``"any"``) is honoured instead by sending **no tools** and a ``format`` that constrains the
model's content to JSON matching the tool's parameter schema; the JSON content that comes back is
then returned to the client as that tool's call.

    forced = forced_tool(tools, "get_weather")   # or forced_tool(tools) for "any one of them"
    native["format"] = forced.format            # Ollama grammar-constrains the content
    messages = with_instruction(messages, forced.instruction)   # the model also reads the schema
    ...
    call = forced.call_of(answer["message"]["content"])         # ForcedCall(name, arguments, complete)

Streamed, the arguments arrive as content deltas:

    reader = forced.reader()
    for text in content_deltas:
        delta = reader.feed(text)      # argument text to send now ("" while held back)
        if reader.name is not None and delta: ...   # name is known before the first delta
    call = reader.finish()             # the same ForcedCall ``call_of`` gives for the whole text
    rest = call.arguments[len(sent):]  # what was fed is always a prefix of call.arguments: send the rest

Public API (stable):

- ``forced_tool(tools, name=None, *, param="tool_choice") -> ForcedTool``. ``tools`` is a sequence of
  tool mappings in any of three shapes: OpenAI chat ``{"type": "function", "function": {"name",
  "description", "parameters"}}``, OpenAI Responses ``{"type": "function", "name", "description",
  "parameters"}`` and Anthropic ``{"name", "description", "input_schema"}``. ``name`` is the forced
  tool; ``None`` means "exactly one of these, the model picks". An unknown name, or no tools, raises
  ``InvalidRequestError`` naming ``param``.
- ``ForcedTool.format``: the Ollama ``format`` value. With one candidate tool it is that tool's
  parameter schema itself (``{"type": "object", "properties": {}}`` when it has none), so the
  content *is* the arguments. With several it is ``{"anyOf": [...]}`` over one object per tool,
  ``{"name": {"enum": [tool]}, "arguments": <its schema>}`` with both required and in that order
  (llama.cpp's schema-to-grammar keeps declared order, so the name is generated first and the
  stream can announce the call before its arguments).
- ``ForcedTool.instruction``: a short system text naming the tool(s), their descriptions and
  schemas. The format fixes the syntax only; the model needs the descriptions to fill it well
  (Ollama's docs recommend putting the schema in the prompt as well).
- ``with_instruction(messages, text) -> list``: native messages with ``text`` appended to a leading
  system message, or a new one inserted first (several system messages render badly in many
  templates).
- ``ForcedTool.call_of(content) -> ForcedCall`` and ``ForcedTool.reader() -> ForcedToolReader``
  (``feed(text) -> str``, ``name``, ``finish() -> ForcedCall``) as shown above.
- ``ForcedCall``: ``name``, ``arguments`` (the model's JSON text, whitespace-trimmed: what the
  stream's deltas add up to) and ``complete`` (the arguments are a whole JSON object; false when
  the answer was cut short, e.g. by ``num_predict``).

Why no tools are sent alongside the format: with tools, Ollama runs its tool-call parser over the
output, and for several model families a bare ``{"name": ..., "arguments": ...}`` object *is* a
tool call to that parser, so the content we constrained would vanish into ``tool_calls``. One call
per turn is produced, whatever ``parallel_tool_calls`` says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.errors import InvalidRequestError
from proxy.jsonio import JSONDecodeError, dumps, loads

__all__ = ["ForcedCall", "ForcedTool", "ForcedToolReader", "forced_tool", "with_instruction"]

_EMPTY_SCHEMA: Mapping[str, object] = {"type": "object", "properties": {}}
# the head of the several-tools object up to the arguments value, as the grammar generates it
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')
_WS = " \t\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class ForcedCall:
    """A tool call read back from constrained content."""

    name: str
    arguments: str
    complete: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tool:
    name: str
    description: str
    parameters: Mapping[str, object]


def _tool_of(tool: object) -> _Tool | None:
    if not isinstance(tool, Mapping):
        return None
    function = tool.get("function")
    spec = function if isinstance(function, Mapping) else tool
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        return None
    description = spec.get("description")
    schema = spec.get("parameters", spec.get("input_schema"))
    return _Tool(name=name, description=description if isinstance(description, str) else "",
                 parameters=schema if isinstance(schema, Mapping) and schema else _EMPTY_SCHEMA)


@dataclass(frozen=True, slots=True)
class ForcedTool:
    """The tool(s) a forced answer must call: ``format`` and ``instruction`` out, calls back in."""

    tools: tuple[_Tool, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tools)

    @property
    def format(self) -> dict[str, object]:
        if len(self.tools) == 1:
            return dict(self.tools[0].parameters)
        return {"anyOf": [
            {"type": "object",
             "properties": {"name": {"enum": [t.name]}, "arguments": dict(t.parameters)},
             "required": ["name", "arguments"], "additionalProperties": False}
            for t in self.tools
        ]}

    @property
    def instruction(self) -> str:
        def line(t: _Tool) -> str:
            about = f": {t.description}" if t.description else ""
            return f"- {t.name}{about}\n  parameters (JSON schema): {dumps(t.parameters).decode()}"

        if len(self.tools) == 1:
            return ("Answer by calling this function. Reply with only its arguments, as one JSON object "
                    "matching its parameter schema.\n" + line(self.tools[0]))
        return ("Answer by calling exactly one of these functions. Reply with only one JSON object "
                '{"name": <function name>, "arguments": <its arguments>}.\n'
                + "\n".join(line(t) for t in self.tools))

    def reader(self) -> ForcedToolReader:
        return ForcedToolReader(self.names)

    def call_of(self, content: str) -> ForcedCall:
        """The call a whole (non-streamed) constrained answer stands for."""
        reader = self.reader()
        reader.feed(content)
        return reader.finish()


class ForcedToolReader:
    """Reads streamed constrained content: argument text as it arrives, the name as soon as known.

    Whitespace before the arguments and at their end is held back, so the deltas add up to exactly
    ``finish().arguments``. With several tools the ``{"name": ..., "arguments":`` head is held until
    complete, then the arguments stream and the closing brace is dropped.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self.name: str | None = names[0] if len(names) == 1 else None
        self._head = "" if len(names) > 1 else None  # buffered text before the arguments (several tools)
        self._sent: list[str] = []
        self._pending_ws = ""
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False
        self._ended = False

    def _scan(self, text: str) -> str:
        """The part of ``text`` inside the arguments value (several tools: stop at its end)."""
        if self._head is None and len(self._names) == 1:
            return text
        for i, ch in enumerate(text):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                    if self._depth == 0:
                        self._ended = True
                        return text[: i + 1]
                continue
            if not self._started and ch in _WS:
                continue
            self._started = True
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                if self._depth == 0:  # a bare scalar, then the wrapper's closing brace
                    self._ended = True
                    return text[:i]
                self._depth -= 1
                if self._depth == 0:
                    self._ended = True
                    return text[: i + 1]
            elif self._depth == 0 and (ch == "," or ch in _WS):
                self._ended = True
                return text[:i]
        return text

    def feed(self, text: str) -> str:
        """Take one content delta; return the argument text to send now (maybe ``""``)."""
        if self._ended or not text:
            return ""
        if self._head is not None:
            self._head += text
            match = _HEAD.match(self._head)
            if match is None:
                return ""
            try:
                name = loads(match.group(1))
            except JSONDecodeError:
                name = None
            self.name = name if isinstance(name, str) else None
            text = self._head[match.end():]
            self._head = None
        text = self._scan(text)
        if not self._sent and not self._pending_ws:
            text = text.lstrip(_WS)
        body = text.rstrip(_WS)
        if not body:
            self._pending_ws += text
            return ""
        out = self._pending_ws + body
        self._pending_ws = text[len(body):]
        self._sent.append(out)
        return out

    def finish(self) -> ForcedCall:
        """The call, once the content is over. Text that never matched the expected head is parsed whole."""
        if self._head is not None:  # several tools, and the head never completed: parse what came
            return self._whole(self._head)
        arguments = "".join(self._sent)
        try:
            parsed = loads(arguments)
        except JSONDecodeError:
            parsed = None
        return ForcedCall(name=self.name or self._names[0], arguments=arguments,
                          complete=isinstance(parsed, dict) and self.name in self._names)

    def _whole(self, text: str) -> ForcedCall:
        try:
            parsed = loads(text)
        except JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("name") in self._names and isinstance(parsed.get("arguments"), dict):
            return ForcedCall(name=str(parsed["name"]), arguments=dumps(parsed["arguments"]).decode(), complete=True)
        return ForcedCall(name=self._names[0], arguments=text.strip(_WS), complete=False)


def forced_tool(tools: Sequence[object], name: str | None = None, *, param: str = "tool_choice") -> ForcedTool:
    """The forced choice among ``tools``: the one called ``name``, or any one of them when ``name`` is None."""
    specs = tuple(t for t in (_tool_of(tool) for tool in tools) if t is not None)
    if name is not None:
        specs = tuple(t for t in specs if t.name == name)[:1]
        if not specs:
            raise InvalidRequestError(f"Invalid '{param}': no tool named {name!r} was given in 'tools'.",
                                      param=param)
    if not specs:
        raise InvalidRequestError(f"Invalid '{param}': a tool call is required but no tools were given.",
                                  param=param)
    return ForcedTool(specs)


def with_instruction(messages: Sequence[Mapping[str, object]], text: str) -> list[dict[str, object]]:
    """Native messages with ``text`` added to the leading system message (inserted when there is none)."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        first = out[0].get("content")
        out[0]["content"] = f"{first}\n\n{text}" if isinstance(first, str) and first else text
    else:
        out.insert(0, {"role": "system", "content": text})
    return out

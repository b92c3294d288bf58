"""Strict reading of plain config mappings, collecting every problem with its dotted path.

Pure: stdlib only. Used by `policies.parse` and by `proxy.config` so that one config file yields
one list of errors such as ``routes[1].targets[0].weight: must be a number > 0 (got 'ten')``.
``${VAR}`` and ``${VAR:-default}`` in string values are resolved against an environment mapping
passed in by the caller (never ``os.environ`` here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["Problems", "Section", "SchemaError", "expand_env"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SchemaError(ValueError):
    """Raised once with every problem found; ``problems`` holds ``(path, message)`` pairs."""

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in self.problems))


def expand_env(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${VAR}``/``${VAR:-default}``; returns the text and the names that were missing."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REF.sub(sub, value), missing


class Problems:
    """An ordered collection of ``(path, message)`` problems."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise SchemaError(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


_MISSING: Any = object()


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Section:
    """A view over one mapping of the config, at ``path``, that reports into ``problems``.

    Every key read is remembered; ``done()`` reports the keys nobody read as unknown, which is how
    a typo such as ``fallbak:`` becomes an error instead of being ignored.
    """

    def __init__(
        self,
        raw: object,
        path: str,
        problems: Problems,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.problems = problems
        self.environ = environ if environ is not None else {}
        self._seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            problems.add(path, f"must be a mapping (got {_describe(raw)})")
            raw = {}
        self.raw: Mapping[str, object] = raw

    def at(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def _take(self, key: str) -> object:
        self._seen.add(key)
        value = self.raw.get(key, _MISSING)
        return _MISSING if value is None else value

    def _expand(self, key: str, value: str) -> str:
        text, missing = expand_env(value, self.environ)
        for name in missing:
            self.problems.add(self.at(key), f"environment variable {name} is not set")
        return text

    def str(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        if not isinstance(value, str):
            self.problems.add(self.at(key), f"must be a string (got {_describe(value)})")
            return None if default is _MISSING else default
        value = self._expand(key, value)
        if choices is not None:
            allowed = tuple(choices)
            if value not in allowed:
                self.problems.add(self.at(key), f"must be one of {', '.join(allowed)} (got {value!r})")
                return None if default is _MISSING else default
        return value

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        if not isinstance(value, bool):
            self.problems.add(self.at(key), f"must be true or false (got {_describe(value)})")
            return default if default is not _MISSING else False
        return value

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        integer: bool = False,
    ) -> Any:
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not integer:
            ok = ok or isinstance(value, float)
        bounds = ""
        if ok and minimum is not None:
            if exclusive_minimum and not value > minimum:  # type: ignore[operator]
                ok, bounds = False, f" > {minimum:g}"
            elif not exclusive_minimum and not value >= minimum:  # type: ignore[operator]
                ok, bounds = False, f" >= {minimum:g}"
        if ok and maximum is not None and not value <= maximum:  # type: ignore[operator]
            ok, bounds = False, f" <= {maximum:g}"
        if not ok:
            if not bounds:
                if minimum is not None:
                    bounds = f" {'>' if exclusive_minimum else '>='} {minimum:g}"
                if maximum is not None:
                    bounds += f"{' and' if bounds else ''} <= {maximum:g}"
            self.problems.add(self.at(key), f"must be {kind}{bounds} (got {_describe(value)})")
            return None if default is _MISSING else default
        return value

    def list(self, key: str, default: Any = _MISSING) -> list[tuple[str, object]] | Any:
        """Return ``[(path, item), ...]``; a single non-list value is an error."""
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        if not isinstance(value, list):
            self.problems.add(self.at(key), f"must be a list (got {_describe(value)})")
            return []
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        """A list of strings; a lone string is accepted as a list of one."""
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problems.add(self.at(key), f"must be a list of strings (got {_describe(value)})")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problems.add(f"{self.at(key)}[{i}]", f"must be a string (got {_describe(item)})")
                continue
            out.append(self._expand(key, item))
        return tuple(out)

    def mapping(self, key: str) -> Section:
        value = self._take(key)
        return Section(None if value is _MISSING else value, self.at(key), self.problems, self.environ)

    def raw_mapping(self, key: str, default: Any = _MISSING) -> Any:
        """A free-form mapping (e.g. Ollama ``options``), checked only for being a mapping."""
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        if not isinstance(value, Mapping):
            self.problems.add(self.at(key), f"must be a mapping (got {_describe(value)})")
            return {} if default is _MISSING else default
        return dict(value)

    def custom(self, key: str, convert: Callable[[object, str], Any], default: Any = _MISSING, *,
               expand: bool = True) -> Any:
        """Read ``key`` with ``convert(value, path)``; convert raises ValueError with a message.

        A string value has its ``${VAR}`` references expanded first unless ``expand`` is False.
        """
        value = self._take(key)
        if value is _MISSING:
            return self._default(key, default)
        if expand and isinstance(value, str):
            value = self._expand(key, value)
        try:
            return convert(value, self.at(key))
        except ValueError as exc:
            self.problems.add(self.at(key), str(exc))
            return None if default is _MISSING else default

    def _default(self, key: str, default: Any) -> Any:
        if default is _MISSING:
            self.problems.add(self.at(key), "is required")
            return None
        return default

    def done(self) -> None:
        for key in self.raw:
            if key not in self._seen:
                self.problems.add(self.at(str(key)), "unknown key")

"""Output schemas learned from a tool's real outputs: validate a simulated output, repair it.

Learned per tool from the prior-call store (held-out records excluded), never
declared: whether the tool answers JSON or text; for JSON, every key path seen
(``a.b``, ``a[].c``), the JSON types at each path, which top-level keys are always
there, the format of string values (``HAT123`` -> ``AAA999``, ``2024-05-15`` ->
``9999-99-99``) where one format dominates, and the serialisation style (separators,
indentation) the real tool prints. ``validate`` lists the problems; ``repair`` fixes
what it can from a template (the nearest real output), and returns None when the
output is beyond repair (a JSON tool answered with prose and there is no template).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

_MIN_FORMAT = 3  # samples before a string format is enforced
_DOMINANT = 0.9
_STYLES: dict[str, dict[str, Any]] = {
    "spaced": {"separators": (", ", ": ")},
    "compact": {"separators": (",", ":")},
    "indent2": {"indent": 2},
    "indent4": {"indent": 4},
}


def shape(value: str) -> str:
    """Characters by class: digits 9, upper-case A, lower-case a, the rest kept."""
    return re.sub(r"[a-z]", "a", re.sub(r"[A-Z]", "A", re.sub(r"[0-9]", "9", value)))


def loose_shape(value: str) -> str:
    """``shape`` with runs collapsed (lengths free): ``Mia`` and ``Noah`` share ``Aa+``."""
    return re.sub(r"(9|a|A)\1+", r"\1+", shape(value))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def parse_json(text: str) -> Any:
    """The JSON value of a text, else the first JSON object/array inside it, else raises ValueError."""
    import json

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return value
    raise ValueError("no JSON value in the output")


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) for every value: ``a.b`` for object keys, ``a[]`` for list items."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, f"{path}[]")


def dumps(value: Any, style: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, **_STYLES.get(style, _STYLES["spaced"]))


def detect_style(text: str, value: Any) -> str | None:
    for name in _STYLES:
        if dumps(value, name) == text.strip():
            return name
    return None


@dataclass
class OutputSchema:
    tool: str
    n: int = 0
    kind: str = "text"  # json | text
    style: str = "spaced"
    top: str = "object"  # JSON type of the whole output
    required: frozenset[str] = frozenset()  # top-level keys in (almost) every object output
    types: dict[str, set[str]] = field(default_factory=dict)  # path -> JSON types seen
    formats: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> ("exact"|"loose", shape)

    @classmethod
    def learn(cls, tool: str, outputs: Sequence[str]) -> OutputSchema:
        schema = cls(tool=tool, n=len(outputs))
        values = []
        for text in outputs:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, (dict, list)):
                values.append((text, value))
        if not outputs or len(values) < 0.8 * len(outputs):
            return schema
        schema.kind = "json"
        schema.style = Counter(detect_style(t, v) or "spaced" for t, v in values).most_common(1)[0][0]
        schema.top = Counter(json_type(v) for _, v in values).most_common(1)[0][0]
        objects = [v for _, v in values if isinstance(v, dict)]
        keys = Counter(k for v in objects for k in v)
        schema.required = frozenset(k for k, c in keys.items() if objects and c >= _DOMINANT * len(objects))
        strings: dict[str, list[str]] = {}
        for _, value in values:
            for path, item in walk(value):
                schema.types.setdefault(path, set()).add(json_type(item))
                if isinstance(item, str):
                    strings.setdefault(path, []).append(item)
        for path, items in strings.items():
            if len(items) < _MIN_FORMAT:
                continue
            for how, fn in (("exact", shape), ("loose", loose_shape)):
                top, count = Counter(fn(s) for s in items).most_common(1)[0]
                if count >= _DOMINANT * len(items):
                    schema.formats[path] = (how, top)
                    break
        return schema

    def _format_ok(self, path: str, value: str) -> bool:
        rule = self.formats.get(path)
        if rule is None:
            return True
        return (shape(value) if rule[0] == "exact" else loose_shape(value)) == rule[1]

    def validate(self, text: str) -> list[str]:
        """Problems of an output against the learned schema; empty when it conforms."""
        if self.kind != "json":
            return [] if text.strip() else ["empty output"]
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return ["not JSON (the tool answers JSON)"]
        problems = []
        if json_type(value) != self.top:
            problems.append(f"top-level {json_type(value)}, the tool answers {self.top}")
        if isinstance(value, dict):
            problems += [f"missing key {k!r}" for k in sorted(self.required - set(value))]
        for path, item in walk(value):
            if not path:
                continue
            if path not in self.types:
                problems.append(f"unknown key {path!r}")
            elif json_type(item) not in self.types[path]:
                problems.append(f"{path!r} is {json_type(item)}, expected {'/'.join(sorted(self.types[path]))}")
            elif isinstance(item, str) and not self._format_ok(path, item):
                problems.append(f"{path!r} = {item!r} does not match the format {self.formats[path][1]!r}")
        return problems

    def repair(self, text: str, template: str | None = None) -> str | None:
        """A conforming output built from ``text`` (and ``template``, a real output of the tool), or None."""
        if self.kind != "json":
            return text if text.strip() else template
        base: Any = None
        if template is not None:
            try:
                base = orjson.loads(template)
            except orjson.JSONDecodeError:
                base = None
        try:
            value = parse_json(text)
        except ValueError:
            return dumps(base, self.style) if base is not None else None
        fixed = self._fix(value, base, "")
        if json_type(fixed) != self.top:
            return dumps(base, self.style) if base is not None else None
        if isinstance(fixed, dict) and isinstance(base, dict):
            for key in self.required - set(fixed):
                if key in base:
                    fixed[key] = base[key]
            fixed = {k: fixed[k] for k in [*(k for k in base if k in fixed), *(k for k in fixed if k not in base)]}
        return dumps(fixed, self.style)

    def _fix(self, value: Any, base: Any, path: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                sub = f"{path}.{key}" if path else str(key)
                if sub not in self.types:
                    continue  # a key the tool never prints
                out[key] = self._fix(item, base.get(key) if isinstance(base, dict) else None, sub)
            return out
        if isinstance(value, list):
            first = base[0] if isinstance(base, list) and base else None
            return [self._fix(item, base[i] if isinstance(base, list) and i < len(base) else first, f"{path}[]")
                    for i, item in enumerate(value)]
        wanted = self.types.get(path)
        if wanted and json_type(value) not in wanted:
            value = _coerce(value, wanted, base)
        if isinstance(value, str) and not self._format_ok(path, value):
            if isinstance(base, str) and self._format_ok(path, base):
                return base
        return value


def _coerce(value: Any, wanted: set[str], base: Any) -> Any:
    """``value`` as one of the wanted JSON types where it converts cleanly, else the template's value."""
    if "number" in wanted or "integer" in wanted:
        try:
            number = float(str(value).replace(",", "").strip())
        except ValueError:
            number = None
        if number is not None:
            return int(number) if "integer" in wanted and number.is_integer() else number
    if "string" in wanted and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if "boolean" in wanted and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return base if base is not None and json_type(base) in wanted else value

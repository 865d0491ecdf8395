"""Retrieval-and-edit simulation and consistency edits, for any tool of any domain.

- ``retrieve_and_edit``: start from the nearest real output of the same tool and edit only
  what the call's arguments require: every value the neighbour's call passed is
  replaced by the value this call passes (wherever the output repeats it), and output
  keys named like an argument take the argument's value.
- ``Entities``: JSON objects seen in an episode, indexed by their id fields (a key
  ``id``/``*_id``/``*Id`` with a string value). ``apply`` makes an output agree with
  them: a read of an entity after a write shows the written fields (``state``); a call
  about an entity the original trajectory already showed repeats its facts (``facts``).

No tool name, key name or domain appears here: ids are recognised by key shape only.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from deploysim.agents.toolsim.outschema import detect_style, dumps

_ID_KEY = re.compile(r"(^id$|_id$|Id$|ID$)")


def is_id_key(key: str) -> bool:
    return bool(_ID_KEY.search(key))


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _args(arguments: str) -> dict[str, Any]:
    value = _loads(arguments)
    return value if isinstance(value, dict) else {}


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{path}.{key}" if path else key))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(_leaves(item, f"{path}[{i}]"))
        return out
    return {path: value}


def substitutions(old_args: dict[str, Any], new_args: dict[str, Any]) -> dict[str, str]:
    """old value -> new value for every argument leaf the two calls pass differently (strings of 2+ chars)."""
    old, new = _leaves(old_args), _leaves(new_args)
    subs: dict[str, str] = {}
    for path, value in old.items():
        other = new.get(path)
        if isinstance(value, str) and isinstance(other, str) and len(value) >= 2 and value != other:
            subs[value] = other
    return subs


def _substitute(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subs) for v in value]
    if isinstance(value, str):
        if value in subs:
            return subs[value]
        return _replace_within(value, subs)
    return value


def _replace_within(text: str, subs: dict[str, str]) -> str:
    """Each old value (3+ chars) replaced where it stands as a whole token inside ``text``."""
    for old, new in sorted(subs.items(), key=lambda kv: -len(kv[0])):
        if len(old) >= 3 and old in text:
            text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new.replace("\\", "\\\\"), text)
    return text


def _overlay(out: Any, arg: Any) -> Any:
    """The argument's value laid onto the output's: objects key by key, lists item by item."""
    if isinstance(out, dict) and isinstance(arg, dict):
        merged = dict(out)
        for key, item in arg.items():
            if key in merged:
                merged[key] = _overlay(merged[key], item)
        return merged
    if isinstance(out, list) and isinstance(arg, list):
        if not out:
            return copy.deepcopy(arg)
        return [_overlay(copy.deepcopy(out[min(i, len(out) - 1)]), a) for i, a in enumerate(arg)]
    if isinstance(out, (dict, list)) != isinstance(arg, (dict, list)):
        return out  # shapes differ: the output keeps its own
    return arg


@dataclass(frozen=True)
class Neighbour:
    arguments: str
    output: str


def nearest(arguments: str, neighbours: Sequence[Neighbour]) -> Neighbour | None:
    """The neighbour whose argument keys match this call's best (ties: retrieval order)."""
    if not neighbours:
        return None
    keys = set(_leaves(_args(arguments)))
    return max(neighbours, key=lambda n: (len(keys & set(_leaves(_args(n.arguments))))
                                          - len(keys ^ set(_leaves(_args(n.arguments))))))


def retrieve_and_edit(arguments: str, neighbours: Sequence[Neighbour]) -> str | None:
    """The nearest real output edited to this call's arguments, in the neighbour's own format; None without one."""
    base = nearest(arguments, neighbours)
    if base is None:
        return None
    subs = substitutions(_args(base.arguments), _args(arguments))
    value = _loads(base.output)
    if not isinstance(value, (dict, list)):
        return _replace_within(base.output, subs)
    style = detect_style(base.output, value) or "spaced"
    edited = _substitute(value, subs)
    if isinstance(edited, dict):
        edited = _overlay(edited, {k: v for k, v in _args(arguments).items() if k in edited})
    return dumps(edited, style)


@dataclass
class Entities:
    """JSON objects by (id key, id value); a later ``add`` of the same entity wins."""

    by_id: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, text: str | None) -> None:
        value = _loads(text)
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                key = primary_id(item)
                if key is not None:  # an object is the entity of its first id only (a reservation is not its user)
                    self.by_id[(key, item[key])] = item
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)

    def __len__(self) -> int:
        return len(self.by_id)

    def apply(self, text: str, arguments: str) -> str:
        """``text`` made consistent with the known entities this call is about."""
        value = _loads(text)
        if not isinstance(value, dict):
            return text
        style = detect_style(text, value) or "spaced"
        args = _args(arguments)
        changed = False
        # the entity this output describes: its primary id (the call's argument when it pins it)
        key = primary_id(value)
        ident = args.get(key, value.get(key)) if key is not None else None
        known = self.by_id.get((key, ident)) if key is not None and isinstance(ident, str) else None
        if known is not None and known is not value and primary_id(known) == key:
            shared = [k for k in known if k in value and k not in args and json_shape(known[k]) == json_shape(value[k])]
            if len(shared) * 2 < len(value):
                shared = []  # a different kind of object that merely mentions the id
            for k in shared:
                if value[k] != known[k]:
                    value[k] = copy.deepcopy(known[k])
                    changed = True
        # an id field of the output the call does not pin: take it from an entity the call's ids belong to
        wanted = {v for k, v in args.items() if is_id_key(k) and isinstance(v, str) and len(v) >= 2}
        for key in [k for k in value if is_id_key(k) and k not in args and isinstance(value[k], str)]:
            for entity in self.by_id.values():
                if key not in entity or not isinstance(entity[key], str):
                    continue
                if wanted & _strings(entity):
                    if value[key] != entity[key]:
                        value[key] = entity[key]
                        changed = True
                    break
        return dumps(value, style) if changed else text


def primary_id(value: dict[str, Any]) -> str | None:
    """The object's own id: its first id-like key with a non-empty string value."""
    return next((k for k, v in value.items() if is_id_key(k) and isinstance(v, str) and v), None)


def _strings(value: Any) -> set[str]:
    return {v for v in _leaves(value).values() if isinstance(v, str)}


def json_shape(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, bool) else "bool"

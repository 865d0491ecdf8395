"""A prompt-based tool-call format for models without native tool calling (the local GGUF models).

Tools go at the *start* of the system prompt, calls are parsed strictly; ``tool_choice="required"``
constrains decoding to one known tool's call where the model honours ``response_format`` (docs/agents.md).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from deploysim.core.models import ModelClient, ModelOutput
from deploysim.core.schema import GenerationParams, Message, ToolCall, content_hash
from deploysim.agents.toolsim.calls import tool_names

FORMAT_VERSION = "prompt-tools-v3"  # bump whenever the rendering, grammar or parsing changes (cache keys)
OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


def compact_tool_list(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        fn = tool.get("function", tool)
        props = (fn.get("parameters") or {}).get("properties") or {}
        required = set((fn.get("parameters") or {}).get("required") or [])
        args = ", ".join(f"{k}{'' if k in required else '?'}: {v.get('type', 'any')}" for k, v in props.items())
        description = str(fn.get("description", "")).split(". ")[0][:120]
        lines.append(f"- {fn.get('name')}({args}): {description}")
    return "\n".join(lines)


def tool_instructions(tools: list[dict[str, Any]]) -> str:
    return (
        "You can call these tools:\n" + compact_tool_list(tools) + "\n\nTo call a tool, reply with only:\n"
        f'{OPEN}{{"name": "TOOL_NAME", "arguments": {{...}}}}{CLOSE}\n'
        "You will get the result back, then continue. When you are done, reply to the user in plain text."
    )


REQUIRED_INSTRUCTIONS = ("You can call these tools:\n{tools}\n\nCall exactly one tool now. Reply with only its JSON: "
                         '{{"name": "TOOL_NAME", "arguments": {{...}}}}')


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one call: a known tool's name with arguments that fit that tool's parameter schema."""
    options = []
    for tool in tools:
        fn = tool.get("function", tool)
        arguments = _bounded(fn.get("parameters") or {"type": "object", "properties": {}})
        options.append({"type": "object", "properties": {"name": {"const": fn.get("name")}, "arguments": arguments},
                        "required": ["name", "arguments"], "additionalProperties": False})
    return {"anyOf": options} if len(options) != 1 else options[0]


#: Grammar bounds where a spec sets none: a small model under a grammar can fill a string or a list forever.
MAX_STRING_CHARS, MAX_ARRAY_ITEMS = 80, 3
#: A forced call cut by the token limit is no call at all: forced steps get at least this many tokens.
MIN_FORCED_CALL_TOKENS = 512


def _bounded(schema: Any) -> Any:
    """The schema with closed objects, bounded strings and bounded arrays, so every call can finish."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    kind = out.get("type")
    if kind == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    elif kind == "string" and not {"enum", "const", "pattern", "format"} & out.keys():
        out.setdefault("maxLength", MAX_STRING_CHARS)
    elif kind == "array":
        out.setdefault("maxItems", MAX_ARRAY_ITEMS)
    return out


def render_messages(messages: list[Message], tools: list[dict[str, Any]], required: bool = False) -> list[Message]:
    """Messages a plain chat model understands: tools in the system prompt, calls and results as text."""
    header = (REQUIRED_INSTRUCTIONS.format(tools=compact_tool_list(tools)) if required
              else tool_instructions(tools))
    out: list[Message] = []
    system_done = False
    for message in messages:
        if message.role == "system" and not system_done:
            out.append(Message(role="system", content=header + "\n\n" + message.text()))
            system_done = True
        elif message.role == "assistant" and message.tool_calls:
            calls = "\n".join(OPEN + orjson.dumps({"name": c.name, "arguments": c.parsed_arguments()}).decode()
                              + CLOSE for c in message.tool_calls)
            out.append(Message(role="assistant", content=(message.text() + "\n" + calls).strip()))
        elif message.role == "tool":
            out.append(Message(role="user", content=f"<tool_response name=\"{message.name or ''}\">\n"
                                                    f"{message.text()}\n</tool_response>"))
        else:
            out.append(Message(role=message.role, content=message.content))
    if not system_done:
        out.insert(0, Message(role="system", content=header))
    return out


def parse_tool_calls(text: str | None, tools: list[dict[str, Any]]) -> tuple[str | None, list[ToolCall]]:
    """(remaining text, calls): strict — unknown tools, invalid JSON or non-object arguments are not calls."""
    if not text or OPEN not in text:
        return text, []
    known = set(tool_names(tools))
    calls: list[ToolCall] = []
    for i, match in enumerate(_BLOCK.finditer(text)):
        try:
            value = orjson.loads(match.group(1).strip())
        except orjson.JSONDecodeError:
            continue
        if not isinstance(value, dict) or value.get("name") not in known:
            continue
        args = value.get("arguments", {})
        if not isinstance(args, dict):
            continue
        arguments = orjson.dumps(args).decode()
        calls.append(ToolCall(id="call_" + content_hash([i, value["name"], arguments])[:20],
                              name=value["name"], arguments=arguments))
    rest = _BLOCK.sub("", text).strip() if calls else text
    return (rest or None), calls


def parse_required_call(text: str | None, tools: list[dict[str, Any]]) -> tuple[str | None, list[ToolCall]]:
    """A forced call's reply: the call's JSON object alone (or in a ``<tool_call>`` block), strictly checked."""
    stripped = (text or "").strip()
    if stripped.startswith("{"):
        rest, calls = parse_tool_calls(f"{OPEN}{stripped}{CLOSE}", tools)
        return (rest, calls) if calls else (text, [])
    return parse_tool_calls(text, tools)


class PromptToolClient:
    """A ModelClient that gives ``inner`` tools through the prompt instead of the API."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self.model_id = inner.model_id

    def cache_identity(self) -> dict[str, Any]:
        return {**self.inner.cache_identity(), "tool_format": FORMAT_VERSION}

    async def generate(self, messages: list[Message], params: GenerationParams,
                       tools: list[dict[str, Any]]) -> ModelOutput:
        if not tools:
            return await self.inner.generate(messages, params, tools)
        choice = params.tool_choice
        inner_params = params.model_copy(update={"tool_choice": None})
        if choice == "required":
            inner_params = inner_params.model_copy(update={
                "response_format": {"type": "json_object", "schema": tool_call_schema(tools)},
                "max_tokens": max(params.max_tokens, MIN_FORCED_CALL_TOKENS)})
            output = await self.inner.generate(render_messages(messages, tools, required=True), inner_params, [])
            text, calls = parse_required_call(output.text, tools)
        else:
            inner_params = inner_params.model_copy(update={"stop": [*params.stop, CLOSE]})
            output = await self.inner.generate(render_messages(messages, tools), inner_params, [])
            text, calls = parse_tool_calls(output.text, tools) if choice != "none" else (output.text, [])
        return ModelOutput(text=text, tool_calls=calls, finish_reason="tool_calls" if calls else output.finish_reason,
                           usage=output.usage, prompt_truncated=output.prompt_truncated)

    async def aclose(self) -> None:
        await self.inner.aclose()


def wrap_for_tools(client: ModelClient, tool_format: str = "auto") -> ModelClient:
    """``auto``: the prompt format for local and instant models, native tool calling for API providers."""
    use_prompt = tool_format == "prompt" or (
        tool_format == "auto" and client.model_id.split("/", 1)[0] in ("local", "instant"))
    return PromptToolClient(client) if use_prompt else client

"""Inspect AI eval logs: ``.eval`` (a zip of JSON members) and ``.json`` (https://inspect.aisi.org.uk/eval-logs.html).

A ``.json`` log holds ``samples: [EvalSample]``; an ``.eval`` log is a zip with ``header.json`` and one
``samples/<id>_epoch_<n>.json`` member per sample, zstd-compressed (method 93, which ``zipfile`` cannot
inflate: read raw and decompressed with ``zstandard``, the ``inspect`` extra). Samples stream one at a
time; ``attachment://`` references are resolved; ``conversation_id`` is the sample id (epochs cluster).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deploysim.core.schema import ROLES, Message, Record, RecordError, ToolCall
from deploysim.pipeline.sources._base import SourceContext, dict_field, tool_arguments
from deploysim.pipeline.sources._io import (
    RawError,
    RawValue,
    SourceError,
    container_kind,
    first_key,
    iter_json_items,
    open_binary,
)

ATTACHMENT = "attachment://"
ZIP_ZSTD = 93
EVAL_KEYS = ("task", "task_id", "run_id", "eval_id", "model", "created")


def _zstd_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fp: Any) -> bytes:
    """A zip member compressed with zstd, read from its local header and decompressed."""
    try:
        import zstandard
    except ImportError:  # pragma: no cover - depends on the environment
        raise SourceError("reading an Inspect .eval log needs the zstandard package: "
                          "pip install 'deploysim[inspect]'") from None
    fp.seek(info.header_offset)
    header = fp.read(30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError("bad local file header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    fp.seek(info.header_offset + 30 + name_len + extra_len)
    raw = fp.read(info.compress_size)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True)
    return reader.read()


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fp: Any) -> bytes:
    if info.compress_type == ZIP_ZSTD:
        return _zstd_member(zf, info, fp)
    return zf.read(info)


class InspectLog:
    name: str  # the entry-point name, set when registered
    detect_order = 12

    def sniff_file(self, path: Path) -> bool:
        kind = container_kind(path)
        if kind == "zip":
            if not zipfile.is_zipfile(path):
                return False
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
            return "header.json" in names or "_journal/start.json" in names
        if kind != "json" or first_key(path) != "version":
            return False
        with open_binary(path) as stream:
            head = stream.read(8192)
        return b'"eval"' in head and b'"task"' in head

    def matches(self, sample: Any) -> bool:
        return isinstance(sample, dict) and isinstance(sample.get("eval"), dict) and (
            isinstance(sample.get("samples"), list) or isinstance(sample.get("sample"), dict))

    def iter_values(self, path: Path) -> Iterator[RawValue | RawError]:
        if container_kind(path) == "zip":
            yield from self._iter_zip(path)
        else:
            yield from self._iter_json(path)

    def _iter_zip(self, path: Path) -> Iterator[RawValue | RawError]:
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise SourceError(f"{path}: not a readable .eval (zip) file: {exc}") from None
        with zf, open(path, "rb") as fp:
            names = zf.namelist()
            eval_spec: dict[str, Any] = {}
            for header in ("header.json", "_journal/start.json"):
                if header in names:
                    try:
                        eval_spec = orjson.loads(read_member(zf, zf.getinfo(header), fp)).get("eval") or {}
                    except (ValueError, orjson.JSONDecodeError):
                        eval_spec = {}
                    break
            count = 0
            for info in zf.infolist():
                if not (info.filename.startswith("samples/") and info.filename.endswith(".json")):
                    continue
                count += 1
                try:
                    sample = orjson.loads(read_member(zf, info, fp))
                except orjson.JSONDecodeError as exc:
                    yield RawError(count, f"broken JSON: {exc}", info.filename)
                    continue
                except (ValueError, OSError, zipfile.BadZipFile) as exc:
                    yield RawError(count, f"member cannot be decompressed: {type(exc).__name__}: {exc}",
                                   info.filename)
                    continue
                yield RawValue({"eval": eval_spec, "sample": sample}, count, info.filename)

    @staticmethod
    def _iter_json(path: Path) -> Iterator[RawValue | RawError]:
        eval_spec: dict[str, Any] = {}
        for raw in iter_json_items(path, "eval"):
            if isinstance(raw, RawValue) and isinstance(raw.value, dict):
                eval_spec = raw.value
            break  # the header comes first; never read on for it
        for raw in iter_json_items(path, "samples.item"):
            if isinstance(raw, RawValue):
                yield RawValue({"eval": eval_spec, "sample": raw.value}, raw.location)
            else:
                yield raw

    def parse(self, value: Any, ctx: SourceContext) -> Iterator[Record]:
        if isinstance(value, dict) and isinstance(value.get("samples"), list):  # a whole small log, decoded
            for sample in value["samples"]:
                yield from self.parse({"eval": value.get("eval") or {}, "sample": sample}, ctx)
            return
        if not isinstance(value, dict) or not isinstance(value.get("sample"), dict):
            raise RecordError("<sample>", "expected an Inspect sample object")
        spec, sample = value.get("eval") or {}, value["sample"]
        sample_id, epoch = sample.get("id"), sample.get("epoch", 1)
        record_id = f"{spec.get('task', 'inspect')}/{sample_id}/epoch{epoch}"
        attachments = dict_field(sample, "attachments")
        raw_messages = sample.get("messages")
        if not isinstance(raw_messages, list):
            raise RecordError("messages", "sample has no messages list", record_id)
        try:
            messages = [self._message(m, f"messages[{i}]", attachments) for i, m in enumerate(raw_messages)]
        except RecordError as exc:
            exc.record_id = record_id
            raise
        scores = dict_field(sample, "scores")
        meta: dict[str, Any] = {f"inspect_{k}": spec[k] for k in EVAL_KEYS if spec.get(k) is not None}
        meta |= {"sample_id": sample_id, "epoch": epoch, "conversation_id": str(sample_id),
                 "scores": {name: s.get("value") if isinstance(s, dict) else s for name, s in scores.items()}}
        if isinstance(sample.get("metadata"), dict) and sample["metadata"]:
            meta["sample_metadata"] = sample["metadata"]
        yield Record(id=record_id, messages=messages, metadata=meta, source_file=ctx.source_file,
                     source_line=ctx.location, format=self.name)

    @staticmethod
    def _resolve(value: Any, attachments: dict[str, Any], field: str) -> Any:
        if isinstance(value, str) and value.startswith(ATTACHMENT):
            key = value[len(ATTACHMENT):]
            if key not in attachments:
                raise RecordError(field, f"attachment {key!r} is not in the sample's attachments")
            return attachments[key]
        if isinstance(value, dict):
            return {k: InspectLog._resolve(v, attachments, f"{field}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [InspectLog._resolve(v, attachments, f"{field}[{i}]") for i, v in enumerate(value)]
        return value

    def _message(self, raw: Any, field: str, attachments: dict[str, Any]) -> Message:
        if not isinstance(raw, dict):
            raise RecordError(field, f"message must be an object, got {type(raw).__name__}")
        role = raw.get("role")
        if role not in ROLES:
            raise RecordError(f"{field}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        content = self._content(self._resolve(raw.get("content"), attachments, f"{field}.content"), field)
        calls = []
        for j, call in enumerate(raw.get("tool_calls") or []):
            where = f"{field}.tool_calls[{j}]"
            if not isinstance(call, dict) or not call.get("function"):
                raise RecordError(f"{where}.function", "tool call has no function name")
            arguments = self._resolve(call.get("arguments"), attachments, f"{where}.arguments")
            calls.append(ToolCall(id=str(call.get("id") or f"{field}-{j}"), name=str(call["function"]),
                                  arguments=tool_arguments(arguments)))
        if role == "tool" and not content and isinstance(raw.get("error"), dict):
            content = f"Error: {raw['error'].get('message', '')}"
        return Message(role=role, content=content, tool_calls=calls, tool_call_id=raw.get("tool_call_id"),
                       name=raw.get("function") if role == "tool" else None)

    @staticmethod
    def _content(content: Any, field: str) -> str | None:
        if content is None or isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise RecordError(f"{field}.content", f"content must be a string or a list, got {type(content).__name__}")
        texts = []
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind != "reasoning":
                texts.append(f"[{kind}]")
        return "".join(texts)

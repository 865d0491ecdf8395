"""Counterfactual production: regenerate every assistant turn of a conversation, in order (docs/backtest.md).

Users are the logged turns (``users="logged"``) or a user simulator (``users=MODEL``). Output: ``rollout.jsonl``
(openai format, ``metadata.provenance`` per message), the resume journal too. Counts reconcile:
records_read = accepted + rejected; accepted = written + errored.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from deploysim.core.lifecycle import Executed, Run, Workload, run_workload
from deploysim.core.models import Model
from deploysim.core.schema import Deployment, GenerationParams, Message, Record, Reject
from deploysim.core.store import JsonlJournal
from deploysim.pipeline.config import SimConfig
from deploysim.pipeline.engine import ReplayWorkload

OUTPUT = "rollout.jsonl"
ERRORS = "errors.jsonl"
LOGGED_USERS = "logged"
END_TOKEN = "[END]"
SIMULATOR_NAME = "user_simulator"

#: The user simulator's instructions (documented in README "Rollout"). The original user's
#: next turn is the intent; the simulator rewrites it to follow what this assistant said.
USER_SIMULATOR_PROMPT = """You are a person chatting with an AI assistant. You are the user, not the assistant.
Your goal for your next message: {intent}
Write your next message to the assistant, in your own words and language, reacting to its last reply.
If the assistant already gave you everything you wanted, write only {end}.
Write only the message."""


class RolloutError(ValueError):
    """Bad rollout usage (exit 2)."""


def cut_user_turns(messages: list[Message], max_user_turns: int | None) -> list[Message]:
    """The conversation up to (not including) its ``max_user_turns + 1``-th user turn."""
    if max_user_turns is None:
        return list(messages)
    seen = 0
    for i, message in enumerate(messages):
        if message.role == "user":
            seen += 1
            if seen > max_user_turns:
                return list(messages[:i])
    return list(messages)


def _transcript(messages: list[Message]) -> str:
    return "\n\n".join(f"{m.role.upper()}: {m.text()}" for m in messages if m.role in ("user", "assistant"))


def simulator_messages(so_far: list[Message], intent: str) -> list[Message]:
    """What the user simulator is sent: its instructions, then the conversation so far as data."""
    return [
        Message(role="system", content=USER_SIMULATOR_PROMPT.format(intent=intent, end=END_TOKEN)),
        Message(role="user", content=f"The conversation so far:\n\n{_transcript(so_far)}\n\n"
                                      "Your next message:"),
    ]


def clean_user_turn(text: str | None) -> str | None:
    """The simulated turn, or None when the simulator ended the conversation (or wrote nothing)."""
    text = (text or "").strip()
    if text.endswith("Your next message:"):
        text = text[: -len("Your next message:")].strip()
    for prefix in ("USER:", "User:", "user:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    if not text or END_TOKEN in text[: len(END_TOKEN) + 2]:
        return None
    return text


class RolloutWorkload(Workload[SimConfig, Any]):
    """Kind ``rollout``: inputs -> conversations regenerated turn by turn -> rollout.jsonl."""

    kind = "rollout"

    def __init__(self, config: SimConfig, users: str = LOGGED_USERS,
                 simulator_params: GenerationParams | None = None, max_user_turns: int | None = None) -> None:
        if len(config.deployments) != 1:
            raise RolloutError("a rollout answers with exactly one deployment")
        super().__init__(config)
        self.deployment = config.deployments[0]
        self.users = users
        self.max_user_turns = max_user_turns
        self.simulator = None if users == LOGGED_USERS else Deployment(
            name=SIMULATOR_NAME, model=users, params=simulator_params or self.deployment.params,
            concurrency=self.deployment.concurrency)
        self.counts = {"conversations_written": 0, "conversations_errored": 0, "conversations_skipped_done": 0,
                       "conversations_ended_by_simulator": 0, "assistant_turns": 0, "simulated_user_turns": 0,
                       "logged_user_turns": 0}

    def preflight(self) -> None:
        ReplayWorkload(self.config).preflight()

    async def execute(self, run: Run) -> Executed:
        root = run.root
        done: set[str] = set()
        if run.resume:
            done = set(JsonlJournal(root / OUTPUT, key="id").latest())
            _drop_retried_errors(root / ERRORS)
        else:
            for name in (OUTPUT, ERRORS):
                (root / name).unlink(missing_ok=True)
        self.inputs = inputs = ReplayWorkload(self.config, run.store)
        self.answer = answer = run.models.deployment(self.deployment)
        self.user = user = run.models.deployment(self.simulator) if self.simulator else None
        output = JsonlJournal(root / OUTPUT, key="id").open()
        errors = JsonlJournal(root / ERRORS, key="id").open()
        limit = asyncio.Semaphore(max(1, self.deployment.concurrency) * 2)
        tasks: set[asyncio.Task[None]] = set()
        run.store.open_attempt()
        try:
            for item in inputs.deidentified_records():
                if isinstance(item, Reject):
                    inputs._reject(item)
                    continue
                if item.id in done:
                    self.counts["conversations_skipped_done"] += 1
                    continue
                await limit.acquire()
                task = asyncio.create_task(self._one(item, answer, user, output, errors))
                task.add_done_callback(lambda t: limit.release())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            output.close()
            errors.close()
            run.store.close_attempt()
        return Executed(rows={}, skipped=self.counts["conversations_skipped_done"])

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        written = len(JsonlJournal(run.root / OUTPUT, key="id").latest())
        c = self.inputs.counts
        summary = {
            "workload": "rollout",
            "deployment": self.deployment.model_dump(mode="json"),
            "users": self.users,
            "user_simulator_prompt": USER_SIMULATOR_PROMPT if self.simulator else None,
            "max_user_turns": self.max_user_turns,
            "records_read": c.records_read, "records_accepted": c.records_accepted,
            "records_rejected": c.records_rejected, "records_sampled": c.records_sampled,
            "rejects_by_reason": c.rejects_by_reason,
            **self.counts,
            "conversations_in_output": written,
            "calls": {"deployment": vars(self.answer.stats),
                      "user_simulator": vars(self.user.stats) if self.user else None},
            "duration_s": round(time.time() - run.started, 2),
        }
        considered = c.records_sampled if c.records_sampled is not None else c.records_accepted
        summary["reconciled"] = bool(
            c.records_read == c.records_accepted + c.records_rejected
            and considered == self.counts["conversations_written"] + self.counts["conversations_errored"]
            + self.counts["conversations_skipped_done"]
            and written == self.counts["conversations_written"] + self.counts["conversations_skipped_done"])
        return summary

    async def _one(self, record: Record, answer: Model, user: Model | None,
                   output: JsonlJournal, errors: JsonlJournal) -> None:
        original = cut_user_turns(record.messages, self.max_user_turns)
        out: list[Message] = []
        provenance: list[str] = []
        counts = {"assistant_turns": 0, "simulated_user_turns": 0, "logged_user_turns": 0}
        ended = False

        def failed(turn_index: int, role: str, error: str | None) -> None:
            errors.append({"id": record.id, "turn_index": turn_index, "role": role, "error": error})
            self.counts["conversations_errored"] += 1

        async def reply(key: object, turn_index: int) -> bool:
            nonlocal out
            generation = await answer.generate(self.deployment.apply_system_prompt(out), id=f"{record.id}:{key}")
            if not generation.ok:
                failed(turn_index, "assistant", generation.error)
                return False
            out = [*out, Message(role="assistant", content=generation.text or "")]
            provenance.append(f"deployment:{self.deployment.name}")
            counts["assistant_turns"] += 1
            return True

        for i, message in enumerate(original):
            if message.role == "tool":
                break  # tool results answered another model's calls: agents room territory
            if message.role == "system":
                out.append(message)
                provenance.append("logged")
                continue
            if message.role == "user":
                if user is None or not any(m.role == "assistant" for m in out):
                    out.append(message)
                    provenance.append("logged")
                    counts["logged_user_turns"] += 1
                    continue
                generation = await user.generate(simulator_messages(out, message.text()), id=f"{record.id}:{i}:user")
                if not generation.ok:
                    failed(i, "user", generation.error)
                    return
                text = clean_user_turn(generation.text)
                if text is None:
                    ended = True
                    break
                out.append(Message(role="user", content=text))
                provenance.append(f"simulator:{self.users}")
                counts["simulated_user_turns"] += 1
            # an assistant turn: regenerate it when it answers a user turn, drop the logged one otherwise
            elif out and out[-1].role == "user" and not await reply(i, i):
                return
        if out and out[-1].role == "user" and not await reply("end", len(out)):  # cut (or ended) on a user turn
            return
        # the rollout is a new population: the input's sampling weight does not carry over
        metadata = {k: v for k, v in record.metadata.items() if k != "provenance"}
        metadata.update({"provenance": provenance, "rollout_deployment": self.deployment.name,
                         "rollout_users": self.users, "source_record_id": record.id})
        output.append({"id": record.id, "messages": [m.model_dump(exclude_defaults=True) for m in out],
                       "metadata": metadata})
        self.counts["conversations_written"] += 1
        for name, n in counts.items():
            self.counts[name] += n
        self.counts["conversations_ended_by_simulator"] += int(ended)


def _drop_retried_errors(path: Path) -> None:
    """A resumed rollout retries errored conversations; their old error lines are kept aside."""
    if path.exists() and path.stat().st_size:
        path.rename(path.with_suffix(f".{int(time.time())}.jsonl"))


def run_rollout(config: SimConfig, out: Path, *, users: str = LOGGED_USERS, max_user_turns: int | None = None,
                simulator_params: GenerationParams | None = None, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) a rollout of ``config``'s single deployment into ``out``; returns the summary."""
    workload = RolloutWorkload(config, users=users, simulator_params=simulator_params, max_user_turns=max_user_turns)
    return run_workload(workload, Path(out), resume=resume, show_progress=False)


def read_rollout(path: Path) -> list[dict[str, Any]]:
    """The conversations of a rollout's output, as written."""
    with open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]

"""Tool resolution: canonical matching, resolution order, overlay semantics, connector safety."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from deploysim.core.models import Limits, Model, ModelOutput
from deploysim.core.schema import GenerationParams, Message, Record, ToolCall
from deploysim.agents.toolsim import (
    ConnectorError,
    JsonDocumentConnector,
    LLMToolSimulator,
    Overlay,
    PriorCallStore,
    RepositoryConnector,
    SimulationRequest,
    ToolPolicy,
    ToolResolver,
    build_prompt,
    call_signature,
    canonical_args,
    clean_output,
    logged_calls,
    parse_affordances,
    safe_relpath,
)

FIX = Path(__file__).parent / "fixtures" / "agents"


class FakeSim:
    """A ModelClient that records what it was asked and answers a fixed text."""

    model_id = "fake/sim"

    def __init__(self, answer: str = '{"simulated": true}') -> None:
        self.answer = answer
        self.prompts: list[list[Message]] = []

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "fake", "model": "sim", "n": id(self)}

    async def generate(self, messages: list[Message], params: GenerationParams, tools: list) -> ModelOutput:
        self.prompts.append(messages)
        return ModelOutput(text=self.answer, finish_reason="stop")

    async def aclose(self) -> None:
        return None


def simulator(fake: FakeSim) -> LLMToolSimulator:
    return LLMToolSimulator(Model(fake, None, name="sim", limits=Limits(max_retries=0)))


def call(name: str, args: Any, cid: str = "c1") -> ToolCall:
    return ToolCall(id=cid, name=name, arguments=args if isinstance(args, str) else orjson.dumps(args).decode())


def trajectory() -> Record:
    """user -> get_doc(a) -> update_doc(a) -> get_doc(a) again (a different answer after the write)."""
    return Record(id="t1", messages=[
        Message(role="system", content="policy"),
        Message(role="user", content="please update a"),
        Message(role="assistant", tool_calls=[call("get_doc", {"id": "a", "v": 1}, "x1")]),
        Message(role="tool", tool_call_id="x1", content='{"id": "a", "n": 1}'),
        Message(role="assistant", tool_calls=[call("update_doc", {"id": "a"}, "x2")]),
        Message(role="tool", tool_call_id="x2", content='{"id": "a", "n": 2}'),
        Message(role="assistant", tool_calls=[call("get_doc", {"id": "a", "v": 1}, "x3")]),
        Message(role="tool", tool_call_id="x3", content='{"id": "a", "n": 2}'),
        Message(role="assistant", content="done"),
    ])


def docs_connector(tmp_path: Path) -> JsonDocumentConnector:
    (tmp_path / "docs.json").write_bytes(orjson.dumps({"a": {"id": "a", "n": 1}, "b": {"id": "b", "n": 5}}))
    return JsonDocumentConnector({"documents": {"docs": "docs.json"}, "tools": {
        "get_doc": {"get": {"document": "docs", "key": "{id}"}, "missing": "Error: no {id}"},
        "find_doc": {"search": {"document": "docs", "where": {"n": "{n}"}}},
        "update_doc": {"writes": {"document": "docs", "key": "{id}"}},
    }}, tmp_path)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- canonical matching -------------------------------------------------------------------------


def test_canonical_args_ignores_key_order_and_whitespace() -> None:
    assert canonical_args('{"b": 1, "a": {"y": 2, "x": [1, 2]}}') == canonical_args('{"a":{"x":[1,2],"y":2},"b":1}')
    assert call_signature("f", '{"a": 1}') == call_signature("f", {"a": 1})
    assert canonical_args('{"a": 1}') != canonical_args('{"a": "1"}')
    assert canonical_args('{"a": [1, 2]}') != canonical_args('{"a": [2, 1]}')  # list order matters
    assert call_signature("f", "{}") != call_signature("g", "{}")
    assert canonical_args("  not json ") == '"not json"'
    assert canonical_args("") == canonical_args("{}")


def test_tool_policy_classes() -> None:
    policy = ToolPolicy.from_config({"read": ["bash", "lookup_x"], "write": ["get_and_delete"]})
    assert policy.kind("bash") == "shell"  # declaring a shell tool "read" never makes it runnable
    assert policy.kind("run_command") == "shell"
    assert policy.kind("get_user") == "read"
    assert policy.kind("get_and_delete") == "write"
    assert policy.kind("frobnicate") == "write"  # unknown: the safe side


def test_logged_calls_pair_outputs_within_their_block() -> None:
    record = trajectory()
    calls = logged_calls(record.messages)
    assert [(c.call.name, c.output) for c in calls] == [
        ("get_doc", '{"id": "a", "n": 1}'), ("update_doc", '{"id": "a", "n": 2}'), ("get_doc", '{"id": "a", "n": 2}')]


# -- resolution order ---------------------------------------------------------------------------


def test_resolution_order_replay_then_store_then_connector_then_simulator(tmp_path: Path) -> None:
    fake = FakeSim()
    policy = ToolPolicy.from_config({"write": ["update_doc"]})
    store = PriorCallStore()
    other = Record(id="other", messages=[
        Message(role="user", content="hi"),
        Message(role="assistant", tool_calls=[call("get_doc", {"id": "b"}, "o1")]),
        Message(role="tool", tool_call_id="o1", content="from store"),
    ])
    store.add_record(other, policy)
    resolver = ToolResolver(policy=policy, store=store, connectors=[docs_connector(tmp_path)],
                            simulator=simulator(fake))
    episode = resolver.start_episode(trajectory(), start=1)
    conv = trajectory().messages[:2]
    # a: the logged call, arguments reordered -> exact replay of the logged output
    first = run(resolver.resolve(episode, call("get_doc", '{"v":1, "id":"a"}'), conv))
    assert (first.source, first.output) == ("replay", '{"id": "a", "n": 1}')
    # b: not in this log, but a prior call in the same (empty-write) state -> store
    assert run(resolver.resolve(episode, call("get_doc", {"id": "b"}), conv)).source == "store"
    # c: nothing logged, connector declares it -> connector, exact snapshot value
    found = run(resolver.resolve(episode, call("find_doc", {"n": 5}), conv))
    assert (found.source, orjson.loads(found.output)) == ("connector", [{"id": "b", "n": 5}])
    # d: a tool nobody knows -> simulator
    sim = run(resolver.resolve(episode, call("get_weather", {"city": "x"}), conv))
    assert (sim.source, sim.output) == ("simulator", '{"simulated": true}')
    assert episode.by_source() == {"replay": 1, "store": 1, "connector": 1, "simulator": 1}


def test_replay_only_while_write_history_matches(tmp_path: Path) -> None:
    fake = FakeSim()
    policy = ToolPolicy.from_config({"write": ["update_doc"]})
    resolver = ToolResolver(policy=policy, connectors=[], simulator=simulator(fake))
    episode = resolver.start_episode(trajectory(), start=1)
    conv = trajectory().messages[:2]
    # the same write as the log, in the same state -> replayed; then the later read replays the post-write output
    assert run(resolver.resolve(episode, call("update_doc", {"id": "a"}), conv)).source == "replay"
    again = run(resolver.resolve(episode, call("get_doc", {"id": "a", "v": 1}), conv))
    assert (again.source, again.output) == ("replay", '{"id": "a", "n": 2}')
    # a different write: the world now differs from every logged state -> no replay
    run(resolver.resolve(episode, call("update_doc", {"id": "zzz"}), conv))
    assert run(resolver.resolve(episode, call("get_doc", {"id": "a", "v": 1}), conv)).source == "simulator"


def test_affordances_none_means_simulator_only(tmp_path: Path) -> None:
    fake = FakeSim()
    store = PriorCallStore()
    store.add_record(trajectory(), ToolPolicy())
    resolver = ToolResolver(store=store, connectors=[docs_connector(tmp_path)], simulator=simulator(fake),
                            affordances=parse_affordances("none"))
    episode = resolver.start_episode(trajectory(), start=1)
    answer = run(resolver.resolve(episode, call("get_doc", {"id": "a", "v": 1}), trajectory().messages))
    assert answer.source == "simulator"
    prompt = fake.prompts[-1][-1].text()
    assert "Conversation so far" not in prompt and "Real outputs" not in prompt
    assert parse_affordances("all") == parse_affordances("replay,store,connectors,trajectory,examples,edit,schema,state,facts")
    with pytest.raises(ValueError):
        parse_affordances("telepathy")


def test_store_exact_is_state_matched_and_leave_one_out() -> None:
    policy = ToolPolicy.from_config({"write": ["update_doc"]})
    store = PriorCallStore()
    store.add_record(trajectory(), policy)
    from deploysim.agents.toolsim import write_state

    empty = write_state([])
    after = write_state([("update_doc", '{"id":"a"}')])
    assert store.exact("get_doc", '{"v":1,"id":"a"}', empty) == '{"id": "a", "n": 1}'
    assert store.exact("get_doc", '{"id":"a","v":1}', after) == '{"id": "a", "n": 2}'
    assert store.exact("get_doc", '{"id":"a","v":1}', empty, exclude_record="t1") is None
    near = store.neighbours("get_doc", '{"id": "q"}', k=2)
    assert near and all(n.tool == "get_doc" for n in near)


def test_store_never_answers_writes_exactly(tmp_path: Path) -> None:
    fake = FakeSim("sim-write")
    policy = ToolPolicy.from_config({"write": ["update_doc"]})
    store = PriorCallStore()
    store.add_record(trajectory(), policy)
    resolver = ToolResolver(policy=policy, store=store, simulator=simulator(fake), leave_one_out=False,
                            affordances=parse_affordances("store,connectors"))
    other = Record(id="t2", messages=[Message(role="user", content="x")])
    episode = resolver.start_episode(other, 0)
    assert run(resolver.resolve(episode, call("update_doc", {"id": "a"}), other.messages)).source == "simulator"
    # after the same write as a logged trajectory, the world state matches it: its post-write read applies
    read = run(resolver.resolve(episode, call("get_doc", {"id": "a", "v": 1}), other.messages))
    assert (read.source, read.output) == ("store", '{"id": "a", "n": 2}')


# -- overlay semantics --------------------------------------------------------------------------


def test_json_overlay_later_reads_see_declared_writes(tmp_path: Path) -> None:
    fake = FakeSim('{"id": "a", "n": 99}')
    policy = ToolPolicy.from_config({"write": ["update_doc", "mystery_write"]})
    conn = docs_connector(tmp_path)
    before = (tmp_path / "docs.json").read_bytes()
    resolver = ToolResolver(policy=policy, connectors=[conn], simulator=simulator(fake),
                            affordances=parse_affordances("connectors,trajectory"))
    record = Record(id="r", messages=[Message(role="user", content="go")])
    episode = resolver.start_episode(record, 0)
    assert orjson.loads(run(resolver.resolve(episode, call("get_doc", {"id": "a"}), [])).output)["n"] == 1
    write = run(resolver.resolve(episode, call("update_doc", {"id": "a"}), []))
    assert write.source == "simulator"
    # the simulator saw the current value of what it changes
    assert '"n": 1' in fake.prompts[-1][-1].text()
    after = run(resolver.resolve(episode, call("get_doc", {"id": "a"}), []))
    assert (after.source, orjson.loads(after.output)["n"]) == ("connector", 99)
    assert (tmp_path / "docs.json").read_bytes() == before  # the snapshot never changes
    assert conn.documents["docs"]["a"]["n"] == 1
    # an undeclared write might have changed anything: the connector stops answering
    run(resolver.resolve(episode, call("mystery_write", {}), []))
    assert run(resolver.resolve(episode, call("get_doc", {"id": "b"}), [])).source == "simulator"
    # a fresh episode starts from the snapshot again
    fresh = resolver.start_episode(record, 0)
    assert orjson.loads(run(resolver.resolve(fresh, call("get_doc", {"id": "a"}), [])).output)["n"] == 1


def test_prefix_writes_seed_the_overlay(tmp_path: Path) -> None:
    policy = ToolPolicy.from_config({"write": ["update_doc"]})
    resolver = ToolResolver(policy=policy, connectors=[docs_connector(tmp_path)], simulator=None)
    record = trajectory()
    record.messages.insert(7, Message(role="user", content="and again?"))  # episode starts after the write
    episode = resolver.start_episode(record, 7)
    assert [w.tool for w in episode.overlay.writes] == ["update_doc"]
    # the connector now returns the logged post-write value
    answer = run(resolver.resolve(episode, call("get_doc", {"id": "a"}), []))
    assert (answer.source, orjson.loads(answer.output)["n"]) == ("connector", 2)


def test_missing_key_uses_declared_error_text(tmp_path: Path) -> None:
    conn = docs_connector(tmp_path)
    answer = conn.answer(call("get_doc", {"id": "nope"}), "read", Overlay())
    assert answer is not None and answer.output == "Error: no nope"


# -- repository connector and safety ------------------------------------------------------------


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            digest.update(str(path.relative_to(root)).encode())
            if not path.is_symlink():
                digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 42\n")
    (root / "README.md").write_text("hello\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    os.symlink(secret, root / "link.txt")
    os.symlink(tmp_path, root / "linkdir")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c1"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    (root / "src" / "app.py").write_text("CHANGED AFTER THE COMMIT\n")  # the work tree moved on
    return root, commit


REPO_TOOLS = {"read_file": {"op": "read", "path": "path"}, "ls": {"op": "list", "path": "path"},
              "grep": {"op": "search", "pattern": "q"}, "write_file": {"op": "write", "path": "path"},
              "rm": {"op": "delete", "path": "path"}, "bash": {"op": "read", "path": "cmd"}}


@pytest.mark.parametrize("mode", ["git", "dir"])
def test_repository_reads_at_commit_and_refuses_escapes(repo: tuple[Path, str], mode: str) -> None:
    root, commit = repo
    conn = RepositoryConnector({"path": str(root), "tools": REPO_TOOLS}, commit=commit if mode == "git" else None)
    overlay = Overlay()

    def read(path: str) -> Any:
        return conn.answer(call("read_file", {"path": path}), "read", overlay)

    expected = "def main():\n    return 42\n" if mode == "git" else "CHANGED AFTER THE COMMIT\n"
    assert read("src/app.py").output == expected
    assert read("./src//app.py").output == expected
    for bad in ("../secret.txt", "src/../../secret.txt", "/etc/passwd", "link.txt", "linkdir/secret.txt", "~/x"):
        answer = read(bad)
        assert answer is None or answer.output is None, bad
        assert "TOP SECRET" not in str(answer)
    listing = conn.answer(call("ls", {"path": "."}), "read", overlay).output
    assert "src/" in listing and "README.md" in listing and "link.txt" not in listing
    assert conn.answer(call("ls", {"path": "linkdir"}), "read", overlay).output is None
    hits = conn.answer(call("grep", {"q": "return 42" if mode == "git" else "CHANGED"}), "read", overlay).output
    assert hits.startswith("src/app.py:")


def test_safe_relpath() -> None:
    assert safe_relpath("a/./b//c") == "a/b/c"
    for bad in ("../x", "a/../../x", "/abs", "C:\\x", "a\\..\\..\\x", "x\x00y", 5):
        with pytest.raises(ConnectorError):
            safe_relpath(bad)


def test_repository_writes_only_to_the_overlay(repo: tuple[Path, str], tmp_path: Path) -> None:
    root, commit = repo
    before_repo, before_parent = _tree_digest(root), sorted(p.name for p in tmp_path.iterdir())
    fake = FakeSim("ok")
    conn = RepositoryConnector({"path": str(root), "tools": REPO_TOOLS}, commit=commit)
    resolver = ToolResolver(policy=ToolPolicy.from_config({"write": ["write_file", "rm"]}), connectors=[conn],
                            simulator=simulator(fake))
    record = Record(id="r", messages=[Message(role="user", content="edit")])
    episode = resolver.start_episode(record, 0)
    run(resolver.resolve(episode, call("write_file", {"path": "src/new.py", "content": "NEW"}), []))
    run(resolver.resolve(episode, call("write_file", {"path": "../escaped.txt", "content": "X"}), []))
    run(resolver.resolve(episode, call("write_file", {"path": "/tmp/abs_escape.txt", "content": "X"}), []))
    run(resolver.resolve(episode, call("rm", {"path": "README.md"}), []))
    assert run(resolver.resolve(episode, call("read_file", {"path": "src/new.py"}), [])).output == "NEW"
    gone = run(resolver.resolve(episode, call("read_file", {"path": "README.md"}), []))
    assert gone.source == "simulator"  # deleted in this episode: not served from the snapshot
    assert "README.md does not exist" in fake.prompts[-1][-1].text()
    assert set(episode.overlay.files) == {"src/new.py", "README.md"}
    assert _tree_digest(root) == before_repo
    assert sorted(p.name for p in tmp_path.iterdir()) == before_parent
    assert not Path("/tmp/abs_escape.txt").exists()


def test_shell_tools_never_run_on_the_host(repo: tuple[Path, str], tmp_path: Path) -> None:
    root, commit = repo
    target = tmp_path / "pwned"
    fake = FakeSim("total 0")
    # even a connector that (wrongly) claims the tool is never asked: shell calls are simulated
    conn = RepositoryConnector({"path": str(root), "tools": REPO_TOOLS}, commit=commit)
    resolver = ToolResolver(connectors=[conn], simulator=simulator(fake))
    record = Record(id="r", messages=[Message(role="user", content="x")])
    episode = resolver.start_episode(record, 0)
    for name, args in (("bash", {"cmd": f"touch {target}"}), ("run_command", {"command": f"touch {target}"}),
                       ("execute_python", {"code": f"open('{target}', 'w')"})):
        answer = run(resolver.resolve(episode, call(name, args), []))
        assert (answer.kind, answer.source, answer.output) == ("shell", "simulator", "total 0")
    assert not target.exists()
    assert _tree_digest(root) == _tree_digest(root)


# -- simulator prompt ---------------------------------------------------------------------------


def test_simulator_prompt_sections_and_cleaning() -> None:
    from deploysim.agents.toolsim import PriorCall

    request = SimulationRequest(
        call=call("get_doc", {"id": "a"}),
        spec={"type": "function", "function": {"name": "get_doc", "description": "Get a doc.",
                                               "parameters": {"properties": {"id": {"type": "string"}}}}},
        trajectory=[Message(role="user", content="show me doc a")],
        examples=[PriorCall("get_doc", '{"id":"b"}', '{"id": "b", "n": 5}', "r0")],
        snapshot=["current docs a: {}"], write_log=[{"tool": "update_doc", "arguments": "{}", "output": "ok"}])
    text = build_prompt(request)[-1].text()
    for section in ("# Tool", "Get a doc.", "show me doc a", '{"id": "b", "n": 5}', "current docs a",
                    "update_doc", 'get_doc({"id":"a"})'):
        assert section in text
    assert clean_output('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert clean_output("Output: <tool_response>x</tool_response>") == "x"


def test_store_hit_from_another_trajectory_gets_this_episodes_surrogates() -> None:
    """A prior real output carries PII of the same customer; the episode must see *its own* surrogates."""
    from deploysim.agents.run import deidentifiers

    deid, deid_text = deidentifiers({"mode": "surrogate", "presidio": False})
    raw_out = '{"user": "u1", "email": "jane.doe@corp-mail.com", "phone": "+1 415 555 0134"}'

    def traj(rid: str, line: int, with_call: bool) -> Record:
        msgs = [Message(role="user", content="I am jane.doe@corp-mail.com, look up u1")]
        if with_call:
            msgs += [Message(role="assistant", tool_calls=[ToolCall(id="c1", name="get_user",
                                                                    arguments='{"id": "u1"}')]),
                     Message(role="tool", tool_call_id="c1", content=raw_out)]
        return Record(id=rid, source_file="t.jsonl", source_line=line, messages=msgs)

    policy = ToolPolicy.from_config({"read": ["get_user"]})
    other_raw, mine_raw = traj("other", 1, True), traj("mine", 2, False)
    other, mine = deid(other_raw), deid(mine_raw)
    assert "jane.doe@corp-mail.com" not in other.messages[-1].text()
    store = PriorCallStore()
    store.add_record(other, policy, raw=other_raw)
    resolver = ToolResolver(policy=policy, store=store, affordances=parse_affordances("store"), deid=deid_text)
    episode = resolver.start_episode(mine, 0)
    answer = run(resolver.resolve(episode, call("get_user", {"id": "u1"}), mine.messages))
    assert answer.source == "store"
    assert "jane.doe@corp-mail.com" not in answer.output  # never the raw value
    assert answer.output == deid_text(mine, raw_out)  # this record's surrogates ...
    assert answer.output != other.messages[-1].text()  # ... not the other trajectory's
    mine_email = mine.messages[0].text().split()[2].rstrip(",")
    assert mine_email in answer.output  # consistent with what the user said in this episode
    # without a raw column (store built from de-identified records only) the old behaviour remains
    plain = PriorCallStore()
    plain.add_record(other, policy)
    assert plain.exact_hit("get_user", '{"id": "u1"}', episode.overlay.state()) == (other.messages[-1].text(), False)


def test_prior_call_store_on_disk_keeps_raw_outputs_only_sealed(tmp_path: Path) -> None:
    """With privacy on, the store streams to disk; raw outputs are sealed, still grouped and still answer hits."""
    from deploysim.agents.toolsim import RawSealer, write_state

    secret_email = "jane.doe@corp-mail.com"
    raw_out = f'{{"email": "{secret_email}", "name": "Jane"}}'

    def traj(rid: str, line: int) -> Record:
        msgs = [Message(role="user", content="look me up"),
                Message(role="assistant", tool_calls=[ToolCall(id="c1", name="get_user", arguments='{"id": "u1"}')]),
                Message(role="tool", tool_call_id="c1", content=raw_out)]
        return Record(id=rid, source_file="t.jsonl", source_line=line, messages=msgs)

    policy = ToolPolicy.from_config({"read": ["get_user"]})
    clean = Record(id="a", source_file="t.jsonl", source_line=1,
                   messages=[*traj("a", 1).messages[:2], Message(role="tool", tool_call_id="c1", content="{}")])
    with pytest.raises(ValueError, match="RawSealer"):
        PriorCallStore(tmp_path / "plain.sqlite").add_record(clean, policy, raw=traj("a", 1))
    path = tmp_path / "prior.sqlite"
    store = PriorCallStore(path, RawSealer())
    for i, rid in enumerate(("a", "b", "c")):
        store.add_record(clean.model_copy(update={"id": rid}), policy, raw=traj(rid, i))
    hit = store.exact_hit("get_user", '{"id": "u1"}', write_state([]), exclude_record="a")
    assert hit == (raw_out, True)
    counts = store.db.execute("SELECT count(DISTINCT raw_output), count(*) FROM calls").fetchone()
    assert counts == (1, 3)  # deterministic sealing: equal outputs still group
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("prior.sqlite*"))
    assert secret_email.encode() not in on_disk and b"Jane" not in on_disk
    # a new process (a new key) cannot open what an old one sealed
    from cryptography.exceptions import InvalidTag

    reopened = PriorCallStore(path, RawSealer())
    with pytest.raises(InvalidTag):
        reopened.exact_hit("get_user", '{"id": "u1"}', write_state([]))

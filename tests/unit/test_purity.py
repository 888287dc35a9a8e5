"""The pure centre stays pure (STYLE §3 "Module boundaries"): jobs.py, state.py and
parse.py import only the stdlib and dqorch's other pure modules, never I/O, clocks or
randomness, and state.py never reads the time or draws random numbers. And raft/ is a
Raft library: nothing in it imports dqorch outside raft/ (its state machine comes in
through raft/fsm.py's interface)."""

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "dqorch"

# dqorch modules a pure one may use
PURE = ("jobs", "state", "parse", "errors", "codec", "raft.errors", "raft.codec")
PURE_LIBS = {"orjson"}         # outside the stdlib, and pure too: a JSON codec, no I/O
FORBIDDEN = {"gevent", "pika", "bottle", "prometheus_client", "socket", "time", "random",
             "uuid", "os", "threading", "subprocess", "select", "signal", "logging",
             "asyncio", "secrets", "multiprocessing", "concurrent"}
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
               ("date", "today")}


def imports(source: str, module: str) -> list:
    """Absolute names of everything `source` (the module dqorch.<module>) imports."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append(node.module)
                continue
            base = ["dqorch"] + module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            if node.module:
                out.append(".".join(base + [node.module]))
            else:                                    # from . import jobs
                out += [".".join(base + [a.name]) for a in node.names]
    return out


def violations(source: str, module: str) -> list:
    bad = []
    for name in imports(source, module):
        top = name.split(".")[0]
        if name == "__future__":
            continue
        if top == "dqorch":
            if name not in {"dqorch." + m for m in PURE}:
                bad.append(name + " (not a pure dqorch module)")
        elif top in FORBIDDEN:
            bad.append(name + " (forbidden)")
        elif top not in sys.stdlib_module_names and top not in PURE_LIBS:
            bad.append(name + " (not in the stdlib)")
    return bad


def attribute_calls(source: str) -> set:
    """(base, attr) of every `base.attr` in the source, e.g. ("time", "time")."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name):
                out.add((base.id, node.attr))
            elif isinstance(base, ast.Attribute):          # datetime.datetime.now
                out.add((base.attr, node.attr))
    return out


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_only_stdlib_and_pure_dqorch(module):
    source = (PKG / (module.replace(".", "/") + ".py")).read_text()
    assert violations(source, module) == []


@pytest.mark.parametrize("module", ["jobs", "state", "parse"])
def test_pure_module_never_reads_the_clock(module):
    source = (PKG / (module + ".py")).read_text()
    assert attribute_calls(source) & CLOCK_CALLS == set()


def code_only(source: str) -> str:
    """The source without comments and string literals (docstrings may say "time.")."""
    toks = tokenize.generate_tokens(io.StringIO(source).readline)
    return " ".join(t.string for t in toks
                    if t.type not in (tokenize.COMMENT, tokenize.STRING))


CALLS = re.compile(r"(?<![\w.])(time|random|uuid)\s*\.")


def test_state_never_calls_time_random_or_uuid():
    source = (PKG / "state.py").read_text()
    used = {base for base, _ in attribute_calls(source)}
    assert used & {"time", "random", "uuid", "os", "datetime"} == set()
    assert CALLS.findall(code_only(source)) == []


def test_the_call_check_catches_a_call_but_not_prose():
    assert CALLS.findall(code_only("x = time.monotonic()\ny = random .random()\n")) == \
        ["time", "random"]
    assert CALLS.findall(code_only('"""never reads the time."""\n# uuid.uuid4\nruntime.x\n')) == []


# The checks themselves must be able to fail. ##############################

@pytest.mark.parametrize("source, culprit", [
    ("import time\n", "time"),
    ("import os.path\n", "os.path"),
    ("from random import Random\n", "random"),
    ("import uuid as u\n", "uuid"),
    ("from gevent import sleep\n", "gevent"),
    ("import yaml\n", "yaml"),
    ("from . import api\n", "dqorch.api"),
    ("from .raft import log\n", "dqorch.raft"),
    ("from .metrics import X\n", "dqorch.metrics"),
    ("def f():\n    import socket\n", "socket"),
])
def test_the_import_check_catches_a_forbidden_import(source, culprit):
    bad = violations("from __future__ import annotations\nimport json\n" + source, "state")
    assert len(bad) == 1 and bad[0].startswith(culprit), bad


def test_the_import_check_resolves_relative_imports():
    src = "from . import jobs\nfrom .jobs import PENDING\nfrom .errors import bad\n"
    assert imports(src, "parse") == ["dqorch.jobs", "dqorch.jobs", "dqorch.errors"]
    assert violations(src, "parse") == []
    assert imports("from .. import state\n", "raft.core") == ["dqorch.state"]


def outside_raft(source: str, module: str) -> list:
    """What the module dqorch.<module> (one of raft/) imports of dqorch outside raft/."""
    return [name for name in imports(source, module)
            if name.split(".")[0] == "dqorch" and not name.startswith("dqorch.raft.")]


RAFT_MODULES = sorted(p.stem for p in (PKG / "raft").glob("*.py"))


@pytest.mark.parametrize("module", RAFT_MODULES)
def test_raft_imports_nothing_of_dqorch_outside_raft(module):
    """raft/ is a Raft library (issue 26): the job registry, its snapshot format and
    dqorch's errors reach it only through raft/fsm.py's interface and arguments."""
    source = (PKG / "raft" / (module + ".py")).read_text()
    assert outside_raft(source, "raft." + module) == []


def test_raft_holds_the_modules_the_check_reads():
    assert {"core", "log", "node", "fsm", "wire"} <= set(RAFT_MODULES)


@pytest.mark.parametrize("source, culprit", [
    ("from .. import state as st_mod\n", "dqorch.state"),
    ("from ..errors import LogFailed\n", "dqorch.errors"),
    ("from ..codec import dumps\n", "dqorch.codec"),
    ("import dqorch.jobs\n", "dqorch.jobs"),
    ("def f():\n    from ..fsm import SNAPSHOTS\n", "dqorch.fsm"),
])
def test_the_raft_check_catches_an_import_from_outside_raft(source, culprit):
    inside = "from . import core as C\nfrom .log import RaftLog\nfrom .codec import loads\n"
    assert outside_raft(inside + source, "raft.node") == [culprit]


def test_the_clock_check_catches_a_clock_read():
    src = "import datetime\nt = datetime.datetime.now()\nd = datetime.date.today()\n"
    assert attribute_calls(src) & CLOCK_CALLS == {("datetime", "now"), ("date", "today")}


def test_raft_core_imports_nothing_from_dqorch_and_no_clock_or_randomness():
    """STYLE §3: raft/core.py imports only the stdlib, nothing of dqorch, and gets its
    randomness injected (an rng argument), never from `random` itself."""
    source = (PKG / "raft" / "core.py").read_text()
    assert violations(source, "raft.core") == []
    names = {a.name for n in ast.walk(ast.parse(source))
             if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(ast.parse(source))
               if isinstance(n, ast.ImportFrom) and n.module}
    assert not (names | modules) & {"time", "random", "socket", "os", "gevent"}
    assert not [m for m in modules if m.startswith("dqorch") or m == ""]
    assert attribute_calls(source) & CLOCK_CALLS == set()

"""Property tests for dqorch.state: random logs of every op over a few ids and workers
(reports of any status in any order, duplicated and late; timeouts and confirms of
right and stale attempts; dead workers; evictions), applied to a fresh State, with
the lifecycle invariants checked after every command and determinism (replay, and
snapshot + the rest of the log) checked at the end.

Pure and reproducible: derandomize=True and no example database, so CI runs the same
examples every time. DQ_HYPOTHESIS_EXAMPLES sets how many (default 300). A failure
prints the generated templates and, as a note, the log of commands actually applied.
"""

import collections
import json
import os

from hypothesis import HealthCheck, given, note, settings

from dqorch import jobs
from dqorch.jobs import Job
from dqorch import state as S
from dqorch.jobs import TERMINAL
from dqorch.state import State, apply
from tests.unit.helpers import T0, build, check, fingerprint, steps

TERMINAL_EVENTS = {"RETRYING", "FAILED", "TIMEOUT", "COMPLETED", "CANCELLED"}
# The status a job must have just after each terminal event of one of its attempts.
STATUS_AFTER = {"RETRYING": "pending", "FAILED": "failed", "TIMEOUT": "failed",
                "COMPLETED": "completed", "CANCELLED": "cancelled"}

SETTINGS = settings(
    max_examples=int(os.environ.get("DQ_HYPOTHESIS_EXAMPLES", "300")),
    derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Invariants checked after every command ######################################

def _shown(j) -> str:
    """A job but its history and the late reports it still waits for (jobs.Job.past)."""
    return json.dumps(dict(j.to_record(), history=None, past=None))


def _terminal_jobs(st: State) -> dict:
    return {id_: (j["seq"], _shown(j), list(jobs.history_of(j)))
            for id_, j in st.jobs.items() if j["status"] in TERMINAL}


def check_terminal_jobs_stay(st: State, cmd: dict, before: dict, ids_before) -> None:
    """Only evict forgets a job, and only a terminal one. A terminal job changes only
    by a register; its history may gain only notes of ignored late reports (and what
    it still waits for, `past`, may shrink)."""
    gone = [i for i in ids_before if i not in st.jobs]
    assert not gone or cmd["op"] == "evict", f"{gone} vanished"
    assert all(i in before for i in gone), f"evict forgot a non-terminal job in {gone}"
    if cmd["op"] == "register":
        return
    for id_, (seq, text, hist) in before.items():
        job = st.jobs.get(id_)
        if job is None:
            continue
        assert job["seq"] == seq
        assert _shown(job) == text, f"terminal job {id_} changed"
        new = jobs.history_of(job)
        if new != hist:
            assert new == (hist + new[-1:])[-S.HISTORY_MAX:], f"history of {id_} rewritten"
            assert "ignored late" in new[-1][3] or " late on " in new[-1][3], new[-1]


class EventLedger:
    """Events per (job, incarnation seq, attempt), read from the outbox as it grows."""

    def __init__(self) -> None:
        self.ended = collections.Counter()
        self.last = {}                           # job id -> (outbox seq, at_ms)
        self.next = 1

    def take(self, st: State, cmd: dict, before: dict, terminal_before: dict) -> None:
        new = list(range(self.next, st.outbox_next))
        assert all(k in st.outbox for k in new), "an event was dropped before publishing"
        self.next = st.outbox_next
        per_job = collections.Counter(st.outbox[k]["job"] for k in new)
        assert all(n == 1 for n in per_job.values()), ("two events for one job", per_job)
        for k in new:
            ev = st.outbox[k]
            id_ = ev["job"]
            assert ev["at_ms"] == cmd["at_ms"], "an event carries its command's time"
            restarted = cmd["op"] == "register" and cmd["id"] == id_
            assert id_ not in terminal_before or restarted, \
                f"event {ev['status']} for terminal {id_}"
            last_seq, last_at = self.last.get(id_, (0, cmd["at_ms"]))
            assert k > last_seq and ev["at_ms"] >= last_at, "events out of commit order"
            self.last[id_] = (k, ev["at_ms"])
            job = st.jobs[id_]
            seq, attempt = before.get(id_, (job["seq"], 0))
            if restarted:                 # a new attempt, ended in the same command
                attempt = job["attempt"]
            if ev["status"] in TERMINAL_EVENTS:
                key = (id_, seq, attempt)
                self.ended[key] += 1
                assert self.ended[key] == 1, f"second terminal event for attempt {key}"
                assert job["status"] == STATUS_AFTER[ev["status"]], (ev, job["status"])
            else:
                assert ev["status"] == "RUNNING" and job["status"] == "running"


def check_candidates(st: State, now_ms: int) -> None:
    """eviction_candidates picks only terminal jobs, oldest finished first."""
    done = sorted((j["completed_at"], j["id"]) for j in st.jobs.values()
                  if j["status"] in TERMINAL)
    by_age = S.eviction_candidates(st, now_ms, 1000, 10**6)
    assert sorted(by_age) == sorted(i for at, i in done if at <= now_ms - 1000)
    for max_jobs in (0, len(st.jobs) // 2):
        picked = S.eviction_candidates(st, now_ms, 10**9, max_jobs)
        assert len(picked) == min(len(done), max(0, len(st.jobs) - max_jobs))
        ends = [st.jobs[i]["completed_at"] for i in picked]
        assert ends == sorted(ends)
        rest = [at for at, i in done if i not in picked]
        assert not picked or not rest or max(ends) <= min(rest)


# The property ###############################################################

@SETTINGS
@given(steps)
def test_random_logs_keep_every_lifecycle_invariant(steps):
    st, ledger = State(), EventLedger()
    log, outcomes, snaps = [], [], []
    at = T0
    for delta, template in steps:
        at += delta
        cmd = build(st, template, at)
        log.append(cmd)
        if cmd["op"] != "noop":
            note(f"cmd {len(log)}: {json.dumps(cmd)}")
        snaps.append(json.dumps(S.to_snapshot(st), default=Job.to_record))
        before = {id_: (j["seq"], j["attempt"]) for id_, j in st.jobs.items()}
        terminal_before = _terminal_jobs(st)
        text = json.dumps(cmd)
        out = apply(st, cmd)
        assert json.dumps(cmd) == text, "apply mutated the command"
        outcomes.append(out)
        if cmd["op"] == "expire_worker":          # oldest first, however they started
            seqs = [st.jobs[m[0]]["seq"] for m in out["moves"] if m[1] == "running"]
            assert seqs == sorted(seqs), out
        check(st)
        check_terminal_jobs_stay(st, cmd, terminal_before, before)
        for j in st.jobs.values():
            assert 0 <= j["retry_count"] <= j["max_retries"], j
        ledger.take(st, cmd, before, terminal_before)
    check_candidates(st, at)

    final = fingerprint(st)
    again = State()
    assert [apply(again, c) for c in json.loads(json.dumps(log))] == outcomes
    assert fingerprint(again) == final, "the same log gave another state"
    # A snapshot before any command, restored, applies that command as the live state
    # did; from a few cuts, the whole rest of the log ends in the same state.
    snaps.append(final)
    for cut, cmd in enumerate(json.loads(json.dumps(log))):
        resumed = S.from_snapshot(json.loads(snaps[cut]))
        check(resumed)
        assert apply(resumed, cmd) == outcomes[cut], f"outcome differs, snapshot at {cut}"
        assert fingerprint(resumed) == snaps[cut + 1], f"state differs, snapshot at {cut}"
    for cut in (len(log) // 3, 2 * len(log) // 3):
        resumed = S.from_snapshot(json.loads(snaps[cut]))
        tail = [apply(resumed, c) for c in json.loads(json.dumps(log[cut:]))]
        assert tail == outcomes[cut:], f"outcomes differ after a snapshot at {cut}"
        assert fingerprint(resumed) == final, f"state differs after a snapshot at {cut}"
    restored = S.from_snapshot(json.loads(final))
    check_candidates(restored, at)
    assert sorted(S.eviction_candidates(restored, at, 1000, 10**6)) == \
        sorted(S.eviction_candidates(st, at, 1000, 10**6))

"""The job registry as Raft's state machine (raft/fsm.py): state.py's apply behind the
FSM interface RaftNode drives, and the snapshot file format of the registry (the job
rows), which raft/ treats as bytes it names, moves and sends. Glue: it logs and reads
files; state.py stays pure.

Snapshot file, snapshot-<index>.json: lines "<crc32 hex> <json>": a head {"format": 4,
"index", "term", "state" (all but its jobs), "jobs": n, "raft" (Raft's own: the
configuration; absent when it has none to record)}, the jobs in blocks (a line
holds a JSON list of up to JOBS_PER_BLOCK job rows, jobs.Job.to_row), and a trailer
{"end": n, "crc32": of every byte before}. A job's own JSON (payload, ...) is a string
in its row, so orjson reads the blocks without ever decoding user JSON. Formats 1-3
(one job per line, as a record) still load. A damaged file is LogCorrupt (raft/log.py:
start-up stops, naming the file).
"""
from __future__ import annotations

import json
import logging
import zlib

import orjson

from . import state as st_mod
from .codec import dumps, loads
from .raft.log import LogCorrupt

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000


# Snapshot format ###########################################################

def _line(obj) -> bytes:
    body = dumps(obj)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


JOBS_PER_BLOCK = 1000


def snapshot_chunks(index: int, term: int, state: dict, raft: dict | None = None):
    """Format 4: the jobs in blocks, one line per JOBS_PER_BLOCK, each job as its row
    (to_row, see jobs.py) where it has one, as it is otherwise (records in tests and
    from older snapshots). `raft` (the configuration) goes in the head as it is."""
    jobs = state.get("jobs", [])
    head = {"format": 4, "index": index, "term": term,
            "state": {k: v for k, v in state.items() if k != "jobs"}, "jobs": len(jobs)}
    if raft:
        head["raft"] = raft
    chunk = _line(head)
    whole = zlib.crc32(chunk)
    yield chunk
    for i in range(0, len(jobs), JOBS_PER_BLOCK):
        chunk = _line([_row(j) for j in jobs[i:i + JOBS_PER_BLOCK]])
        whole = zlib.crc32(chunk, whole)
        yield chunk
    yield _line({"end": len(jobs), "crc32": whole})


def _row(job):
    to_row = getattr(job, "to_row", None)
    return job if to_row is None else to_row()


def _parse_line(path: str, line: bytes, what, loads=loads):
    """The JSON of one checksummed snapshot line, its checksum verified. what: the
    line's name, or the number of a job line (named only if it is damaged)."""
    if len(line) < 10 or line[8:9] != b" " or not line.endswith(b"\n"):
        raise LogCorrupt(f"{path}: {_line_name(what)} is damaged (not a checksummed line)")
    body = line[9:-1]
    try:
        ok = int(line[:8], 16) == zlib.crc32(body)
    except ValueError:
        ok = False
    if not ok:
        raise LogCorrupt(f"{path}: {_line_name(what)} is damaged (checksum mismatch)")
    return loads(body)


def _line_name(what) -> str:
    return what if isinstance(what, str) else f"job line {what}"


def _trailer(path: str, f, line: bytes, total: int, whole: int) -> None:
    if _parse_line(path, line, "the trailer") != {"end": total, "crc32": whole}:
        raise LogCorrupt(f"{path}: whole-file checksum mismatch")
    if f.read(1):
        raise LogCorrupt(f"{path}: bytes after the trailer")


def _blocks(path: str, f, first: bytes, total: int):
    """Format 4: the job blocks, then the trailer (every byte before it checked)."""
    n, whole = 0, zlib.crc32(first)
    with f:
        for line in f:
            if n == total:
                return _trailer(path, f, line, total, whole)
            try:
                block = _parse_line(path, line, f"the block from job {n + 1}", orjson.loads)
            except ValueError as e:
                raise LogCorrupt(f"{path}: the block from job {n + 1}: {e}")
            if type(block) is not list or not block or n + len(block) > total:
                raise LogCorrupt(f"{path}: the block from job {n + 1} is not a block of "
                                 f"the {total} jobs the head announces")
            whole = zlib.crc32(line, whole)
            n += len(block)
            yield block
    raise LogCorrupt(f"{path}: {n} jobs and no trailer, the head says {total}")


def _line_jobs(path: str, f, first: bytes, total: int, fmt: int):
    """Formats 1-3: one job per line; format 1 without checksums or trailer. Format 3
    lines hold no integer beyond 64 bits (parse.py bounds createdAt; payloads are
    strings in them): orjson alone."""
    job_loads = orjson.loads if fmt >= 3 else json.loads
    n, whole = 0, zlib.crc32(first)
    with f:
        for line in f:
            try:
                if fmt == 1:
                    yield json.loads(line)
                elif n == total:
                    return _trailer(path, f, line, total, whole)
                else:
                    job = _parse_line(path, line, n + 1, job_loads)
                    whole = zlib.crc32(line, whole)
                    yield job
            except ValueError as e:
                raise LogCorrupt(f"{path}: job line {n + 1}: {e}")
            n += 1
    if fmt > 1:
        raise LogCorrupt(f"{path}: {n} jobs and no trailer, the head says {total}")
    if n != total:
        raise LogCorrupt(f"{path}: {n} jobs, the header says {total}")


def _batched(items, size: int):
    block = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def read_snapshot(path: str) -> dict:
    """The snapshot file at path as {"index", "term", "total_jobs", "state"} with
    state["job_blocks"] an iterator of lists of jobs (rows or records) read a block at
    a time, checksum first, so a million jobs never sit in memory as one document. It
    raises LogCorrupt on damage, at the latest at its end."""
    f = open(path, "rb")
    try:
        first = f.readline()
        if first.startswith(b"{"):   # format 1 (before checksums)
            log.warning("snapshot has no checksums (an older format) file=%s", path)
            head, fmt = json.loads(first), 1
        else:
            head = _parse_line(path, first, "the head line")
            fmt = head["format"]
        index, term, total, state = head["index"], head["term"], head["jobs"], head["state"]
        if fmt not in (1, 2, 3, 4):
            raise LogCorrupt(f"{path}: snapshot format {fmt!r}, this version reads 1-4")
    except (ValueError, KeyError, TypeError, LogCorrupt) as e:
        f.close()
        raise e if isinstance(e, LogCorrupt) else LogCorrupt(f"{path}: damaged head ({e!r})")
    blocks = _blocks(path, f, first, total) if fmt >= 4 else \
        _batched(_line_jobs(path, f, first, total, fmt), JOBS_PER_BLOCK)
    return {"index": index, "term": term, "total_jobs": total, "raft": head.get("raft") or {},
            "state": dict(state, job_blocks=blocks)}


class SnapshotFormat:
    """raft/fsm.py's SnapshotFormat for the registry: format 4 written, 1-4 read."""

    @staticmethod
    def write(index: int, term: int, data: dict, raft: dict):
        return snapshot_chunks(index, term, data, raft)

    @staticmethod
    def read(path: str) -> dict:
        return read_snapshot(path)


SNAPSHOTS = SnapshotFormat()


# The state machine #########################################################

class JobFSM:
    """raft/fsm.py's FSM over a state.State. `state` is replaced by restore(): readers
    (the API, the dispatcher) fetch it anew each time, never keep it."""

    def __init__(self) -> None:
        self.state = st_mod.State()

    def apply(self, index: int, cmd: dict) -> dict:
        return st_mod.apply(self.state, cmd)

    def snapshot(self) -> dict:
        """What SNAPSHOTS.write serialises: in the node's forked child, so a view that
        shares the job records is enough (state.to_snapshot)."""
        return st_mod.to_snapshot(self.state)

    def restore(self, snap: dict, pace=None) -> None:
        """The state of a snapshot SNAPSHOTS.read returned, its jobs streamed from the
        file and its progress logged; pace(phase) after each block of jobs (start-up
        hands the hub a turn there)."""
        total = snap["total_jobs"]

        def blocks():
            n, told = 0, 0
            for block in snap["state"]["job_blocks"]:
                n += len(block)
                if n - told >= PROGRESS_EVERY:
                    told = n
                    log.info("loading snapshot jobs=%d of %d (%d%%)", n, total, n * 100 // total)
                yield block
                if pace is not None:
                    pace(f"loading the snapshot jobs={n} of {total}")
        self.state = st_mod.from_snapshot(dict(snap["state"], job_blocks=blocks()))

    def summary(self) -> str:
        return f"jobs={len(self.state.jobs)}"

    @staticmethod
    def describe(cmd) -> str:
        """op and job id of a command, for the one line that names it."""
        if not isinstance(cmd, dict):
            return f"op=? (not a command: {type(cmd).__name__})"
        job = cmd.get("id") or cmd.get("worker_id") or (cmd.get("ids") or [None])[0] \
            or ((cmd.get("items") or [[None]])[0] or [None])[0]
        return f"op={cmd.get('op')} job={job}"

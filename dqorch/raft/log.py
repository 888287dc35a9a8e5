"""The durable half of Raft on one node: hard state (term, vote), log segments and
snapshots in `data_dir`. Owns the disk, nothing else: no greenlets, no clock.

Files:
  hardstate.json           {"term", "vote"}, replaced atomically (tmp, fsync, rename)
  log-<first index>.seg    records: header <IIQQ (length, crc32, index, term) + JSON command
  snapshot-<index>.json    JSON lines: {"index", "term", "state" (all but its jobs),
                           "jobs": n}, then one job per line; the newest one wins
A torn record at the end of the last segment (a crash mid-write) is cut off on open;
damage anywhere else stops start-up (LogCorrupt), because guessing would lose data.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import zlib

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQQ")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class LogCorrupt(Exception):
    """A log segment or snapshot is damaged somewhere a crash cannot explain."""


def encode(index: int, term: int, cmd: dict) -> bytes:
    body = _dumps(cmd).encode("utf-8")
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<QQ", index, term)))
    return HEADER.pack(len(body), crc, index, term) + body


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data) -> None:
    """Write bytes, or an iterable of bytes chunks, to path: all or nothing."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in ([data] if isinstance(data, bytes) else data):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def _snapshot_chunks(index: int, term: int, state: dict, per_chunk: int = 1000):
    jobs = state.get("jobs", [])
    head = {"index": index, "term": term,
            "state": {k: v for k, v in state.items() if k != "jobs"}, "jobs": len(jobs)}
    yield _dumps(head).encode() + b"\n"
    for i in range(0, len(jobs), per_chunk):
        yield "".join(_dumps(j) + "\n" for j in jobs[i:i + per_chunk]).encode()


class RaftLog:
    """Call open() once, then append()/sync() from one greenlet. Indexes start at 1."""

    def __init__(self, data_dir: str) -> None:
        self.dir = data_dir
        self.term = 0
        self.vote: str | None = None
        self.last_index = 0
        self.last_term = 0
        self.snapshot_index = 0
        self._fd: int | None = None
        self._seg_first = 0

    # Start-up ##############################################################

    def open(self):
        """Load hard state and the newest snapshot; return (snapshot or None, list of
        entries after it as (index, term, cmd)), cutting a torn tail."""
        os.makedirs(self.dir, exist_ok=True)
        hs_path = os.path.join(self.dir, "hardstate.json")
        if os.path.exists(hs_path):
            with open(hs_path, "rb") as f:
                hs = json.loads(f.read())
            self.term, self.vote = hs["term"], hs.get("vote")
        snap = self._load_snapshot()
        if snap is not None:
            self.snapshot_index = self.last_index = snap["index"]
            self.last_term = snap["term"]
        entries = []
        segs = self.segments()
        for n, (first, path) in enumerate(segs):
            last_seg = n == len(segs) - 1
            for index, term, cmd in self._read_segment(path, truncate_tail=last_seg):
                if index <= self.snapshot_index:
                    continue
                if index != self.last_index + 1:
                    raise LogCorrupt(f"{path}: index {index} follows {self.last_index}")
                entries.append((index, term, cmd))
                self.last_index, self.last_term = index, term
        if segs:
            self._seg_first = segs[-1][0]
            self._fd = os.open(segs[-1][1], os.O_WRONLY | os.O_APPEND)
        else:
            self._new_segment(self.last_index + 1)
        return snap, entries

    def segments(self) -> list[tuple[int, str]]:
        out = []
        for name in os.listdir(self.dir):
            if name.startswith("log-") and name.endswith(".seg"):
                out.append((int(name[4:-4]), os.path.join(self.dir, name)))
        return sorted(out)

    def _read_segment(self, path: str, truncate_tail: bool):
        with open(path, "rb") as f:
            data = f.read()
        pos, end = 0, len(data)
        while pos < end:
            ok = complete = pos + HEADER.size <= end
            if ok:
                length, crc, index, term = HEADER.unpack_from(data, pos)
                rec_end = pos + HEADER.size + length
                body = data[pos + HEADER.size: rec_end]
                complete = rec_end <= end
                ok = complete and crc == zlib.crc32(
                    body, zlib.crc32(struct.pack("<QQ", index, term)))
            if not ok:
                # A crash mid-append leaves an incomplete last record, a last record
                # with a bad checksum, or zeros. A bad record with data after it is
                # damage a crash cannot explain: stop rather than drop committed ones.
                torn = (not complete or rec_end == end
                        or not data[pos:].strip(b"\0"))
                if not (truncate_tail and torn):
                    raise LogCorrupt(f"{path}: damaged record at byte {pos}")
                # Only a crash mid-append explains damage at the tail: cut it off.
                with open(path, "r+b") as f:
                    f.truncate(pos)
                    os.fsync(f.fileno())
                return
            yield index, term, json.loads(body)
            pos += HEADER.size + length

    def _load_snapshot(self):
        """{"index", "term", "state"} with state["jobs"] an iterator that reads one job
        per line, so a million jobs never sit in memory as one JSON document."""
        names = sorted((int(n[9:-5]), n) for n in os.listdir(self.dir)
                       if n.startswith("snapshot-") and n.endswith(".json"))
        if not names:
            return None
        path = os.path.join(self.dir, names[-1][1])
        log.info("loading snapshot file=%s bytes=%d", path, os.path.getsize(path))
        f = open(path, "rb")
        try:
            head = json.loads(f.readline())
            total = head["jobs"]
        except (ValueError, KeyError, TypeError) as e:   # renamed into place: whole or absent
            f.close()
            raise LogCorrupt(f"{path}: {e!r}")

        def jobs():
            n = 0
            with f:
                for line in f:
                    try:
                        yield json.loads(line)
                    except ValueError as e:
                        raise LogCorrupt(f"{path}: job line {n + 1}: {e}")
                    n += 1
            if n != total:
                raise LogCorrupt(f"{path}: {n} jobs, the header says {total}")
        return {"index": head["index"], "term": head["term"], "total_jobs": total,
                "state": dict(head["state"], jobs=jobs())}

    def write_snapshot(self, index: int, term: int, state: dict) -> None:
        """Write snapshot-<index>.json atomically (called in the forked child)."""
        write_atomic(self.snapshot_path(index), _snapshot_chunks(index, term, state))

    # Writing ###############################################################

    def save_hard_state(self, term: int, vote: str | None) -> None:
        write_atomic(os.path.join(self.dir, "hardstate.json"),
                     json.dumps({"term": term, "vote": vote}).encode())
        self.term, self.vote = term, vote

    def append(self, data: bytes, last_index: int, last_term: int) -> int:
        """Write encoded records (not yet durable: call sync). Returns the offset to
        truncate back to if the following sync fails."""
        offset = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            self.truncate(offset)
            raise
        self.last_index, self.last_term = last_index, last_term
        return offset

    def fileno(self) -> int:
        return self._fd

    def truncate(self, offset: int) -> None:
        try:
            os.ftruncate(self._fd, offset)
        except OSError:
            pass

    def _new_segment(self, first_index: int) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
        path = os.path.join(self.dir, "log-%020d.seg" % first_index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._seg_first = first_index
        _fsync_dir(self.dir)

    def rotate(self) -> None:
        """Start a new segment at last_index + 1 (before a snapshot of last_index)."""
        if self.last_index + 1 != self._seg_first:
            self._new_segment(self.last_index + 1)

    def snapshot_path(self, index: int) -> str:
        return os.path.join(self.dir, "snapshot-%020d.json" % index)

    def compact(self, snapshot_index: int) -> int:
        """After snapshot-<snapshot_index> is durable: drop older snapshots and every
        segment whose entries are all <= snapshot_index. Returns files removed."""
        self.snapshot_index = snapshot_index
        removed = 0
        segs = self.segments()
        for (first, path), nxt in zip(segs, segs[1:]):
            if nxt[0] <= snapshot_index + 1:
                os.unlink(path)
                removed += 1
        for name in os.listdir(self.dir):
            if name.startswith("snapshot-") and name.endswith(".json") \
                    and int(name[9:-5]) < snapshot_index:
                os.unlink(os.path.join(self.dir, name))
                removed += 1
        return removed

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

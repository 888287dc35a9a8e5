"""The durable half of Raft on one node: hard state (term, vote), log segments and
snapshots in `data_dir`. Owns the disk, nothing else: no greenlets, no clock.

Files:
  hardstate.json           {"term", "vote", "commit"}, replaced atomically (tmp, fsync,
                           rename); commit is a lower bound of the commit index,
                           and where the log must at least end (Rule 4)
  log-<first index>.seg    records: header <IIQQ (length, crc32, index, term) + JSON
                           command. Each append starts with a batch mark: a header with
                           index 0, no body, and the batch's byte length as its term.
                           Past the records, FILL bytes (Rule 3).
  snapshot-<index>.json    the state machine's snapshot of entries up to index, in
                           the bytes its SnapshotFormat (raft/fsm.py) writes and
                           reads; the log only needs its index and term from it

Rule 1: a torn tail can only be the last append after the last fsync. It is cut (and
the cut logged) only when it lies inside the last batch, or after it with no valid
record further on and no longer than one append. Inside the last batch it must also
look like a crash: the batch's bytes end short of the end its mark announces, or a
sector of it still holds what was there before the write (zeros or FILL); a whole
batch whose bytes are all there and whose record fails its checksum was changed after
it was written. And no entry at or below hard state's commit is ever cut: those were
fsync'd (and acknowledged). Anything else is damage: LogCorrupt names the file and the
offset, and start-up stops rather than drop committed entries.
Rule 2: after a write fails, the file is cut back to where the batch began. If even
that fails the tail is unknown: `unsure` is set and every append first retries the
cut; until one succeeds nothing more is written.
Rule 3: the open segment is filled with 0xFF bytes ahead of the writes (FILL_AHEAD at
a time, written with the append that needs them and synced by its fsync), so that an
append overwrites blocks the file already has and its fsync commits no change of size.
No record ends in 0xFF (a body is UTF-8 JSON, which never holds that byte; a batch mark
ends in the high bytes of its length, zeros), so the records end where the file's last
run of 0xFF begins: a segment is read as if it ended there, and Rule 1 judges against
that end exactly as against the end of a file without fill. Zeros are never fill. A
segment is cut back to its records when it stops being the open one or at close.
Rule 4: the log's end is checked against durable evidence at every open: the commit
hard state records, at least every COMMIT_RECORD_S while entries commit (raft/node.py
Rule 6) and exactly at a clean stop. A log (snapshot and segments) that ends before it
is LogBehind, named with the file where it ends and the missing range, never a healthy
start. What is lost within the last COMMIT_RECORD_S before a crash cannot be told from
what was never written: that window is this check's blind spot.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from array import array

from .codec import dumps, loads

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQQ")
SEGMENT_RE = re.compile(r"log-(\d{20})\.seg")
SNAPSHOT_RE = re.compile(r"snapshot-(\d{20})\.json")
# The commit loop writes at most this much in one append (a single bigger record goes
# alone), so a torn tail is never longer, unless one record claims the rest.
MAX_APPEND_BYTES = 4 << 20
MAX_RECORD_BYTES = 160 << 20      # a command from a 64 MiB body (max_body_bytes), escaped
# Rule 3. This VM's disk, a 300-byte append and its fsync (bench/fsync.py): into fill
# 139-150 µs and 58-60 µs of CPU, fsync p99 229-243 µs; growing the file 216-231 µs
# and 96-100, p99 421-425. Writing 1 MiB of fill takes ~1.3 ms, once per ~3,000 rounds.
FILL = 0xFF
FILL_AHEAD = 1 << 20
_FILL_BYTES = bytes([FILL]) * FILL_AHEAD


class LogCorrupt(Exception):
    """A log segment, snapshot or hard state is damaged somewhere a crash cannot
    explain, or data_dir holds something that is not ours where ours should be."""


class LogBehind(LogCorrupt):
    """The log ends before the commit index hard state records (Rule 4): entries this
    node fsync'd as committed, and answered for, are gone (cut, deleted, restored from
    an older copy). Start-up stops; docs/RELIABILITY.md says how to recover."""


def _crc(body: bytes, index: int, term: int) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<QQ", index, term)))


def encode(index: int, term: int, cmd: dict) -> bytes:
    body = dumps(cmd)
    return HEADER.pack(len(body), _crc(body, index, term), index, term) + body


def batch_mark(nbytes: int) -> bytes:
    return HEADER.pack(0, _crc(b"", 0, nbytes), 0, nbytes)


def _span(lo: int, hi: int) -> str:
    """Entries [lo, hi], for a message: "entry 5", "entries 4-5"."""
    return f"entry {lo}" if lo == hi else f"entries {lo}-{hi}"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A big file is synced as it is written, every this many bytes. Left to the end, the
# writeback of a 400 MB snapshot made the log's own fsyncs wait for it (ext4 orders
# them after the dirty data): 60-100 ms commit rounds while a snapshot finished.
SYNC_EVERY_BYTES = 4 << 20


def write_atomic(path: str, data) -> None:
    """Write bytes, or an iterable of bytes chunks, to path: all or nothing. A failed
    write leaves no .tmp file behind."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            unsynced = 0
            for chunk in ([data] if isinstance(data, bytes) else data):
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view, unsynced = view[n:], unsynced + n
                if unsynced >= SYNC_EVERY_BYTES:
                    os.fdatasync(fd)
                    unsynced = 0
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")


class RaftLog:
    """Call open() once, then append()/sync() from one greenlet. Indexes start at 1.
    snapshots: the state machine's SnapshotFormat (raft/fsm.py), which writes and reads
    the snapshot files; a log without one has none to load or write."""

    def __init__(self, data_dir: str, snapshots=None) -> None:
        self.dir = data_dir
        self.snapshots = snapshots
        self.term = 0
        self.vote: str | None = None
        self.commit = 0                   # known committed when hard state was saved
        self.last_index = 0
        self.last_term = 0
        self.snapshot_index = 0
        self._snapshot_term = 0
        self.unsure: int | None = None    # Rule 2: offset a failed cut must still reach
        self._fd: int | None = None
        self._seg_first = 0
        self._end = 0                     # the open segment: where its records end
        self._alloc = 0                   # and its size, fill included (Rule 3)
        self._fill_failed = False
        self.read_end = 0
        # Where each entry after the snapshot lies: entry snapshot_index + 1 + k is at
        # byte _offs[k] of segment _segs[k], of term _terms[k] (24 bytes an entry).
        self._segs, self._offs, self._terms = array("q"), array("q"), array("q")
        self._readers: dict[int, int] = {}    # segment first index -> read-only fd

    # Start-up ##############################################################

    def open(self, raw: bool = False, on_snapshot=None):
        """Load hard state and the newest snapshot; return (snapshot or None, list of
        entries after it as (index, term, cmd)), cutting a torn tail (Rule 1). raw:
        each cmd as its JSON bytes, undecoded (the node decodes one at a time).
        on_snapshot(snapshot or None) runs before the segments are read: what it builds
        from the snapshot is then not interleaved in memory with the entries, which are
        freed after the replay (at 1,000,000 jobs and a 100,000-entry tail, 25 B a job
        of RSS otherwise kept). Raises LogCorrupt (one line: file, offset, cause) or
        OSError."""
        os.makedirs(self.dir, exist_ok=True)
        segs, snaps = self._scan()
        hs_missing = not self._load_hard_state()
        snap = self._load_snapshot(snaps)
        if snap is not None:
            self.snapshot_index = self.last_index = snap["index"]
            self.last_term = self._snapshot_term = snap["term"]
        if on_snapshot is not None:
            on_snapshot(snap)
        entries = []
        for n, (first, path) in enumerate(segs):
            last_seg = n == len(segs) - 1
            for index, term, cmd, pos in self._read_segment(path, last_seg, raw):
                if index <= self.snapshot_index:
                    continue
                if index != self.last_index + 1:
                    raise LogCorrupt(f"{path}: index {index} follows {self.last_index}")
                entries.append((index, term, cmd))
                self._note(first, pos, term)
                self.last_index, self.last_term = index, term
        self._check_end(segs, snap)
        if self.term < self.last_term:
            # The term never goes below the last entry's (a lost or older hard state).
            log.warning("hard state behind the log file=%s term=%d last_log_term=%d%s",
                        self._hs_path(), self.term, self.last_term,
                        " (file missing)" if hs_missing else "")
            self.term, self.vote = self.last_term, None
        if segs:
            self._seg_first = segs[-1][0]
            self._fd = os.open(segs[-1][1], os.O_WRONLY)
            self._end, self._alloc = self.read_end, os.fstat(self._fd).st_size
        else:
            self._new_segment(self.last_index + 1)
        return snap, entries

    def _check_end(self, segs, snap) -> None:
        """Rule 4: the log must reach the commit hard state records."""
        if self.last_index >= self.commit:
            return
        if snap is not None and self.last_index == snap["index"]:
            where = self.snapshot_path(snap["index"])      # no entry after it is left
        else:
            where = segs[-1][1] if segs else self.dir
        raise LogBehind(
            f"{where}: the log ends at index {self.last_index} but {self._hs_path()} "
            f"records commit {self.commit}: committed "
            f"{_span(self.last_index + 1, self.commit)} gone (cut, deleted or "
            f"restored from an older copy); "
            f"see docs/RELIABILITY.md, A log behind its commit")

    def _hs_path(self) -> str:
        return os.path.join(self.dir, "hardstate.json")

    def _load_hard_state(self) -> bool:
        path = self._hs_path()
        try:
            with open(path, "rb") as f:
                hs = json.loads(f.read())
            term, vote, commit = hs["term"], hs.get("vote"), hs.get("commit", 0)
            if type(term) is not int or term < 0 or not (vote is None or type(vote) is str) \
                    or type(commit) is not int or commit < 0:
                raise ValueError(f"term={term!r} vote={vote!r} commit={commit!r}")
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise LogCorrupt(f"{path}: is a directory, not dqorch's hard state")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LogCorrupt(f"{path}: damaged hard state ({e}); move it away to take the "
                             f"term from the log (see README, Recovery)")
        self.term, self.vote, self.commit = term, vote, commit
        return True

    def _scan(self):
        """(segments, snapshots) as sorted [(index, path)]. Removes what a killed write
        left (*.tmp); names that are almost ours are logged and left alone; a directory
        named like one of our files is LogCorrupt."""
        segs, snaps = [], []
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            m_seg, m_snap = SEGMENT_RE.fullmatch(name), SNAPSHOT_RE.fullmatch(name)
            if m_seg or m_snap:
                if not os.path.isfile(path):
                    raise LogCorrupt(f"{path}: not a regular file; dqorch keeps its "
                                     f"{'log' if m_seg else 'snapshots'} under that name")
                (segs if m_seg else snaps).append((int((m_seg or m_snap).group(1)), path))
            elif name.endswith(".tmp") and (name.startswith("snapshot-")
                                            or name == "hardstate.json.tmp"):
                log.info("removing an unfinished write file=%s bytes=%d", path,
                         os.path.getsize(path) if os.path.isfile(path) else 0)
                if os.path.isfile(path):
                    os.unlink(path)
            elif name.startswith("snapshot-") and name.endswith((".recv", ".meta",
                                                                  ".received")):
                pass      # a snapshot coming from the leader (cluster.py resumes it)
            elif name.startswith(("log-", "snapshot-")):
                log.warning("ignoring a file that is not dqorch's file=%s", path)
        return segs, snaps

    def segments(self) -> list[tuple[int, str]]:
        return self._scan()[0]

    def _read_segment(self, path: str, truncate_tail: bool, raw: bool = False):
        """Yield (index, term, cmd, offset) of each record; afterwards `read_end` is
        where the records end (after a cut, the cut)."""
        with open(path, "rb") as f:
            data = f.read()
        pos, end = 0, records_end(data)
        batch_end = 0                    # where the batch being read ends (its mark says)
        while pos < end:
            rec = _record_at(data, pos, end)
            if rec is None:
                torn = self._is_torn(data, pos, batch_end, end)
                if truncate_tail and torn and self.last_index < self.commit:
                    # Rule 1: committed entries were fsync'd; no crash tears them.
                    raise LogCorrupt(
                        f"{path}: damaged record at byte {pos} of {end} where committed "
                        f"{_span(self.last_index + 1, self.commit)} must be "
                        f"({self._hs_path()} records commit {self.commit}): damage, not "
                        f"a torn write; see docs/RELIABILITY.md, A log behind its commit")
                if not (truncate_tail and torn):
                    raise LogCorrupt(f"{path}: damaged record at byte {pos} of {end}"
                                     f"{'' if truncate_tail or not torn else ' (not the last segment)'}")
                self._cut(path, data[pos:end], pos)
                self.read_end = pos
                return
            length, index, term = rec
            if index == 0:
                batch_end = pos + HEADER.size + term
            else:
                body = data[pos + HEADER.size: pos + HEADER.size + length]
                yield index, term, body if raw else loads(body), pos
            pos += HEADER.size + length
        self.read_end = pos

    @staticmethod
    def _is_torn(data: bytes, pos: int, batch_end: int, end: int) -> bool:
        """Rule 1: can the bad bytes at pos be the last append, cut short by a crash?
        A crash leaves the end of that append missing or, where pages reached the disk
        out of order, sectors of what was there before (zeros, FILL); never changed
        bytes. end: where the records end (Rule 3)."""
        if pos < batch_end < end:        # a later batch follows: not the last append
            return False
        if pos < batch_end == end and not _unwritten_sector(data, pos, end):
            return False                 # all of it there, none of it old: changed since
        if pos >= batch_end and end - pos > MAX_APPEND_BYTES:
            length = HEADER.unpack_from(data, pos)[0] if end - pos >= HEADER.size else 0
            if not (end - pos - HEADER.size < length <= MAX_RECORD_BYTES):
                return False             # longer than one append, and not one record
        if not any(_record_at(data, p, end) for p in range(pos + 1, end - HEADER.size + 1)):
            return True
        return pos < batch_end and _unwritten_in_record(data, pos, end)

    @staticmethod
    def _cut(path: str, cut: bytes, pos: int) -> None:
        """Cut the file at pos; cut: the bytes from pos to where the records end."""
        what = "zeros" if not cut.strip(b"\0") else "a partial record"
        if len(cut) >= HEADER.size and what != "zeros":
            what += " (index %d)" % HEADER.unpack_from(cut)[2]
        log.warning("cutting a torn log tail file=%s offset=%d bytes=%d holding=%s",
                    path, pos, len(cut), what)
        with open(path, "r+b") as f:
            f.truncate(pos)
            os.fsync(f.fileno())

    def _load_snapshot(self, snaps):
        """The newest snapshot, as the format reads it (None without one)."""
        if not snaps:
            return None
        path = snaps[-1][1]
        log.info("loading snapshot file=%s bytes=%d", path, os.path.getsize(path))
        if self.snapshots is None:
            raise LogCorrupt(f"{path}: a snapshot, and no snapshot format to read it with")
        return self.snapshots.read(path)

    def read_snapshot(self, index: int):
        """The snapshot file of index, as open() returns it (jobs streamed)."""
        return self._load_snapshot([(index, self.snapshot_path(index))])

    def write_snapshot(self, index: int, term: int, data, raft: dict | None = None) -> None:
        """Write snapshot-<index>.json atomically from the state machine's data
        (FSM.snapshot()) and what Raft records of itself (`raft`: the configuration),
        in the bytes of the SnapshotFormat (called in the forked child)."""
        write_atomic(self.snapshot_path(index),
                     self.snapshots.write(index, term, data, raft or {}))

    # Writing ###############################################################

    def save_hard_state(self, term: int, vote: str | None, commit: int | None = None) -> None:
        commit = self.commit if commit is None else commit
        write_atomic(self._hs_path(), json.dumps({"term": term, "vote": vote,
                                                  "commit": commit}).encode())
        self.term, self.vote, self.commit = term, vote, commit

    def append(self, data: bytes, last_index: int, last_term: int) -> int:
        """Write a batch mark and the encoded records (not yet durable: fsync
        fileno()). Returns the offset to truncate back to if that fsync fails.
        OSError: nothing of it is in the file, or `unsure` says the tail is unknown."""
        if self.unsure is not None:
            self.truncate(self.unsure)   # Rule 2: cut back first, or write nothing
        if data:
            first, term = HEADER.unpack_from(data, 0)[2:]
            if first != self.last_index + 1 or term < self.last_term:
                # A gap or a term going back would only be found at the next start.
                raise ValueError(f"append of entry {first} (term {term}) after "
                                 f"{self.last_index} (term {self.last_term})")
        offset = self._end
        view = memoryview(batch_mark(len(data)) + data)
        if offset + len(view) > self._alloc:
            self._fill_ahead(offset + len(view))
        try:
            pos = offset
            while view:
                n = os.pwrite(self._fd, view, pos)
                view, pos = view[n:], pos + n
        except OSError:
            self.truncate(offset)
            raise
        self._end = pos
        self._alloc = max(self._alloc, pos)
        pos = 0
        while pos < len(data):
            length, _, _, term = HEADER.unpack_from(data, pos)
            self._note(self._seg_first, offset + HEADER.size + pos, term)
            pos += HEADER.size + length
        self.last_index, self.last_term = last_index, last_term
        return offset

    def _fill_ahead(self, need: int) -> None:
        """Rule 3: fill from the end of the file to FILL_AHEAD past need. Not synced
        here: the append's own fsync covers it. When it fails (the disk is almost
        full), the append goes on growing the file, and one line says so."""
        pos = self._alloc
        try:
            while pos < need + FILL_AHEAD:
                pos += os.pwrite(self._fd, _FILL_BYTES[:need + FILL_AHEAD - pos], pos)
        except OSError as e:
            if not self._fill_failed:
                log.warning("cannot fill the log segment ahead error=%s; appending "
                            "without (the disk is almost full?)", e)
            self._fill_failed = True
        else:
            if self._fill_failed:
                log.info("log segment filled ahead again")
            self._fill_failed = False
        self._alloc = pos

    def _note(self, seg_first: int, offset: int, term: int) -> None:
        self._segs.append(seg_first)
        self._offs.append(offset)
        self._terms.append(term)

    def _forget_from(self, index: int) -> None:
        """Drop the positions of entries >= index."""
        k = max(0, index - self.snapshot_index - 1)
        del self._segs[k:], self._offs[k:], self._terms[k:]

    # Reading (Raft's storage: what a leader sends a follower) ###############

    def term_at(self, index: int) -> int | None:
        """Term of entry index; None when it is compacted away or not written."""
        if index == self.snapshot_index:
            return self._snapshot_term
        k = index - self.snapshot_index - 1
        return self._terms[k] if 0 <= k < len(self._terms) else None

    def entries(self, lo: int, hi: int) -> list:
        """Entries [lo, hi) as (index, term, cmd), read from the segments. lo must be
        above the snapshot and hi at most last_index + 1 (ValueError otherwise)."""
        if not self.snapshot_index < lo <= hi <= self.last_index + 1:
            raise ValueError(f"entries({lo}, {hi}) outside ({self.snapshot_index}, "
                             f"{self.last_index + 1}]")
        out = []
        for index in range(lo, hi):
            k = index - self.snapshot_index - 1
            fd = self._readers.get(self._segs[k])
            if fd is None:
                path = os.path.join(self.dir, "log-%020d.seg" % self._segs[k])
                fd = self._readers[self._segs[k]] = os.open(path, os.O_RDONLY)
            head = os.pread(fd, HEADER.size, self._offs[k])
            length, crc, i, term = HEADER.unpack(head)
            body = os.pread(fd, length, self._offs[k] + HEADER.size)
            if i != index or len(body) != length or crc != _crc(body, i, term):
                raise LogCorrupt(f"segment {self._segs[k]}: entry {index} does not read "
                                 f"back at byte {self._offs[k]}")
            out.append((index, term, loads(body)))
        return out

    def _close_readers(self, keep=lambda first: False) -> None:
        for first in [f for f in self._readers if not keep(f)]:
            os.close(self._readers.pop(first))

    def fileno(self) -> int:
        return self._fd

    def truncate(self, offset: int) -> None:
        """Cut the open segment back to offset, durably. On failure the tail is
        unknown: `unsure` stays set (Rule 2) and the OSError propagates."""
        while self._segs and self._segs[-1] == self._seg_first and self._offs[-1] >= offset:
            del self._segs[-1], self._offs[-1], self._terms[-1]
        try:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        except OSError:
            self.unsure = offset
            raise
        self._end = self._alloc = offset
        if self.unsure is not None:
            log.warning("log tail cut back offset=%d; writing again", offset)
        self.unsure = None

    def _new_segment(self, first_index: int) -> None:
        # Open the new one first: if that fails (EMFILE, ENOSPC), the old one stays
        # open and usable.
        path = os.path.join(self.dir, "log-%020d.seg" % first_index)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            _fsync_dir(self.dir)
            if self._fd is not None:
                if self._alloc > self._end:
                    os.ftruncate(self._fd, self._end)    # Rule 3: records only
                os.fsync(self._fd)
        except OSError:
            os.close(fd)
            if self._fd is not None:     # keep writing to the old one
                os.unlink(path)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._seg_first = first_index
        self._end = self._alloc = 0

    def rotate(self) -> None:
        """Start a new segment at last_index + 1 (before a snapshot of last_index)."""
        if self.last_index + 1 != self._seg_first:
            self._new_segment(self.last_index + 1)

    def truncate_from(self, index: int) -> None:
        """Drop every entry >= index (a follower's log that conflicts with the leader's,
        Raft §5.3), durably and crash-safe: newer segments are unlinked newest first and
        the directory fsync'd before the segment holding `index` is cut, so a crash
        leaves a prefix of the log, never a log with a hole. Entries at or below the
        snapshot cannot be dropped (they are committed)."""
        if index <= self.snapshot_index:
            raise ValueError(f"truncate_from({index}) at or below the snapshot "
                             f"({self.snapshot_index})")
        if index > self.last_index:
            return
        k = index - self.snapshot_index - 1
        seg, offset = self._segs[k], self._offs[k]
        for first, path in reversed(self.segments()):
            if first > seg:
                if first == self._seg_first and self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                os.unlink(path)
        _fsync_dir(self.dir)
        self._close_readers(keep=lambda first: first <= seg)
        if self._fd is None or self._seg_first != seg:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(os.path.join(self.dir, "log-%020d.seg" % seg),
                               os.O_WRONLY)
            self._seg_first = seg
        os.ftruncate(self._fd, offset)
        os.fsync(self._fd)
        self._end = self._alloc = offset
        self._forget_from(index)
        self.last_index, self.last_term = index - 1, self.term_at(index - 1)
        self.unsure = None

    def install_snapshot(self, index: int, term: int, data=None,
                         path: str | None = None) -> None:
        """A snapshot from the leader replaces this log (Raft §7): write it (from
        `data`, as write_snapshot, or move the received file at `path` into place), then drop every
        segment (newest first) and every older snapshot, and go on at index + 1."""
        if path is not None:
            if os.path.exists(path) or not os.path.exists(self.snapshot_path(index)):
                os.replace(path, self.snapshot_path(index))
            # else: moved there by an earlier attempt that failed later on: go on
        else:
            write_atomic(self.snapshot_path(index), self.snapshots.write(index, term, data, {}))
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._close_readers()
        segs, snaps = self._scan()
        for _, path in reversed(segs):
            os.unlink(path)
        for i, path in snaps:
            if i != index:
                os.unlink(path)
        _fsync_dir(self.dir)
        self._forget_from(self.snapshot_index + 1)
        self.snapshot_index, self._snapshot_term = index, term
        self.last_index, self.last_term = index, term
        self._seg_first = 0
        self._new_segment(index + 1)
        self.unsure = None

    def snapshot_path(self, index: int) -> str:
        return os.path.join(self.dir, "snapshot-%020d.json" % index)

    def compact(self, snapshot_index: int, snapshot_term: int | None = None,
                remove=os.unlink) -> int:
        """After snapshot-<snapshot_index> is durable: drop older snapshots and every
        segment whose entries are all <= snapshot_index. Returns files removed.
        remove(path) deletes a file: the node's does it in a thread, since unlinking
        a 200 MB snapshot held its hub for ~45 ms. The log is compacted in memory
        before the first call."""
        if snapshot_index < self.snapshot_index:
            return 0          # a newer snapshot (one from the leader) is already in place
        k = min(snapshot_index - self.snapshot_index, len(self._terms))
        if snapshot_term is None and 0 < k:
            snapshot_term = self._terms[k - 1]
        del self._segs[:k], self._offs[:k], self._terms[:k]
        self.snapshot_index = snapshot_index
        if snapshot_term is not None:
            self._snapshot_term = snapshot_term
        segs, snaps = self._scan()
        doomed = [path for index, path in snaps if index < snapshot_index]
        for (first, path), nxt in zip(segs, segs[1:]):
            if nxt[0] <= snapshot_index + 1:
                if first in self._readers:
                    os.close(self._readers.pop(first))
                doomed.append(path)
        for path in doomed:
            try:
                remove(path)
            except FileNotFoundError:     # gone already (an install removed it meanwhile)
                pass
        return len(doomed)

    def close(self) -> None:
        """Flush and close; never raises (a stop must always finish)."""
        for fd in self._readers.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._readers.clear()
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._alloc > self._end:
                os.ftruncate(fd, self._end)          # Rule 3: records only
            os.fsync(fd)
        except OSError as e:
            log.error("log flush at close failed error=%s", e)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass


def records_end(data: bytes) -> int:
    """Where the records end: before the last run of FILL bytes (Rule 3)."""
    end = len(data)
    while end:
        start = max(0, end - 65536)
        kept = len(data[start:end].rstrip(_FILL_BYTES[:1]))
        if kept:
            return start + kept
        end = start
    return 0


def _record_at(data: bytes, pos: int, end: int):
    """(length, index, term) of a whole record with a good checksum at pos, ending by
    end, or None."""
    if pos + HEADER.size > end:
        return None
    length, crc, index, term = HEADER.unpack_from(data, pos)
    rec_end = pos + HEADER.size + length
    if rec_end > end or (index == 0 and length):
        return None
    if crc != _crc(data[pos + HEADER.size: rec_end], index, term):
        return None
    return length, index, term


SECTOR = 512


def _old(part: bytes) -> bool:
    """All zeros or all FILL: what a sector the write never reached still holds."""
    return bool(part) and (not part.strip(b"\0") or not part.strip(_FILL_BYTES[:1]))


def _unwritten_sector(data: bytes, pos: int, end: int) -> bool:
    """Does [pos, end) hold a 512-byte sector's share that is _old? JSON bodies hold
    neither byte; a header's share can only by chance (it then counts as torn)."""
    s = pos - pos % SECTOR
    while s < end:
        if _old(data[max(s, pos):min(s + SECTOR, end)]):
            return True
        s += SECTOR
    return False


def _unwritten_in_record(data: bytes, pos: int, end: int) -> bool:
    """Does the record at pos hold an unwritten sector: an _old header, or body bytes
    (JSON, never NUL or 0xFF) that are _old over one 512-byte sector's share?"""
    if _old(data[pos:pos + HEADER.size]):
        return True
    start = pos + HEADER.size
    return _unwritten_sector(data, start, min(start + HEADER.unpack_from(data, pos)[0], end))

"""Sending one snapshot file to one far-behind follower, in chunks, over messages that
may be lost, duplicated or reordered. Owns the wire format of chunks and acks and the
files on both ends; no sockets, no clock, no greenlets: the caller passes the time as
ticks and moves the payloads.

Sender:   out = Outgoing(peer, index, term, path); every tick send out.due(now_ticks);
          on each ack out.on_ack(decode(payload)); stop when out.done, or drop it when
          out.expired(now_ticks) (Raft will offer the snapshot again); then out.close().
Receiver: on the first chunk of (index, term), inc = Incoming(dir, index, term, size,
          crc32); for each chunk send back inc.accept(chunk); once inc.complete the file
          is at inc.done_path; inc.close() when dropping it.

Wire, little-endian, one tag byte first (Raft's JSON messages start with b"{"):
  chunk  b"C" | index u64 | term u64 | offset u64 | size u64 | crc32 u32 | len u16 | data
  ack    b"A" | index u64 | term u64 | offset u64 | complete u8 (0 or 1)
`offset` in an ack is the next byte the receiver needs: every byte in [0, offset) is
held. `size` and `crc32` are of the whole file and travel in every chunk, so any chunk
can start (or restart) a transfer.

Rule 1: the receiver holds a contiguous prefix [0, offset) and nothing else. It takes
only the chunk that covers `offset` (the part from `offset` on); earlier and later
chunks are not written and just re-ack. Go-back-N rather than selective repeat: with a
window of 8 a loss costs at most 8 resends, and a prefix lets one running crc32 cover
everything written, so completion never re-reads the file.
Rule 2: an ack states the receiver's offset when it was sent, and the sender follows
it, backwards too: a crc mismatch restarts the receiver at 0, and a receiver that
crashed may have lost unsynced bytes. Chunks a backward ack re-opens count as sent at
the latest tick, so a stale ack that arrives late costs nothing when a fresher ack
follows within resend_ticks.
Rule 3: on the last byte the receiver fsyncs, compares size and crc32 with the sender's,
renames the file to done_path and fsyncs the directory before it says complete. On a
mismatch it truncates the file to 0, counts `failures` and acks offset 0.
Rule 4: a receiver resumes a `.recv` file from an earlier attempt only if its sidecar
`.recv.meta` records the same (index, term, size, crc32); anything else starts over.
Bytes never fsynced may be garbage after a crash; Rule 3's check catches that.
Rule 5: time is the int tick count passed to due() and expired(); on_ack() has no time
of its own and uses the latest one seen. Progress is an ack that moves the sender's
offset forward; max_silent_ticks without progress means expired.

Both constructors read a whole file once to compute a crc32 (the sender its snapshot,
a resuming receiver the prefix it holds): 1 MiB reads, a few hundred ms for hundreds of
MB. Everything after that touches at most `window` chunks per call.
"""
from __future__ import annotations

import json
import os
import re
import struct
import zlib

from .log import _fsync_dir

CHUNK_BYTES = 32 * 1024
MAX_CHUNK_BYTES = 60 * 1024       # a chunk stays one message well below 64 KiB
MAX_SIZE_BYTES = 64 << 30         # the largest snapshot either end accepts
READ_BYTES = 1 << 20              # the read size when computing a file's crc32

SNAP_CHUNK = "snap_chunk"
SNAP_ACK = "snap_ack"
CHUNK_TAG = b"C"
ACK_TAG = b"A"

_CHUNK = struct.Struct("<cQQQQIH")    # tag, index, term, offset, size, crc32, len
_ACK = struct.Struct("<cQQQB")        # tag, index, term, offset, complete
_U64 = (1 << 64) - 1
_PARTIAL_RE = re.compile(r"snapshot-(\d{20})\.json\.recv(\.meta(\.tmp)?)?")


# Wire format ###############################################################

def _check(index: int, term: int, offset: int, size: int) -> None:
    if not 1 <= index <= _U64:
        raise ValueError(f"index {index} out of range [1, 2**64)")
    if not 0 <= term <= _U64:
        raise ValueError(f"term {term} out of range [0, 2**64)")
    if not 0 <= size <= MAX_SIZE_BYTES:
        raise ValueError(f"size {size} out of range [0, {MAX_SIZE_BYTES}]")
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} out of range [0, size {size}]")


def encode_chunk(index: int, term: int, offset: int, size: int, crc32: int,
                 data: bytes) -> bytes:
    """The payload of the bytes [offset, offset + len(data)) of a file of `size` bytes
    whose crc32 is `crc32`. ValueError if any field is out of range."""
    _check(index, term, offset, size)
    if len(data) > MAX_CHUNK_BYTES or offset + len(data) > size:
        raise ValueError(f"{len(data)} bytes at offset {offset} do not fit a chunk "
                         f"(at most {MAX_CHUNK_BYTES}) of a file of {size} bytes")
    if not 0 <= crc32 <= 0xFFFFFFFF:
        raise ValueError(f"crc32 {crc32} is not a u32")
    return _CHUNK.pack(CHUNK_TAG, index, term, offset, size, crc32, len(data)) + data


def encode_ack(index: int, term: int, offset: int, complete: bool) -> bytes:
    """The payload saying the receiver holds [0, offset) of snapshot (index, term), and
    whether that file is complete and verified."""
    _check(index, term, offset, MAX_SIZE_BYTES)
    return _ACK.pack(ACK_TAG, index, term, offset, 1 if complete else 0)


def decode(payload: bytes) -> dict:
    """{"type": SNAP_CHUNK, "index", "term", "offset", "size", "crc32", "data": bytes}
    or {"type": SNAP_ACK, "index", "term", "offset", "complete": bool}. ValueError on
    anything malformed: the caller counts it and drops it."""
    tag = payload[:1]
    if tag == CHUNK_TAG:
        if len(payload) < _CHUNK.size:
            raise ValueError(f"chunk of {len(payload)} bytes is shorter than its header")
        _, index, term, offset, size, crc32, n = _CHUNK.unpack_from(payload)
        if n != len(payload) - _CHUNK.size:
            raise ValueError(f"chunk says {n} data bytes, carries "
                             f"{len(payload) - _CHUNK.size}")
        if n > MAX_CHUNK_BYTES:
            raise ValueError(f"chunk of {n} data bytes (at most {MAX_CHUNK_BYTES})")
        _check(index, term, offset, size)
        if offset + n > size:
            raise ValueError(f"chunk [{offset}, {offset + n}) ends past size {size}")
        return {"type": SNAP_CHUNK, "index": index, "term": term, "offset": offset,
                "size": size, "crc32": crc32, "data": bytes(payload[_CHUNK.size:])}
    if tag == ACK_TAG:
        if len(payload) != _ACK.size:
            raise ValueError(f"ack of {len(payload)} bytes (exactly {_ACK.size})")
        _, index, term, offset, complete = _ACK.unpack(payload)
        if complete > 1:
            raise ValueError(f"ack complete byte {complete} is not 0 or 1")
        _check(index, term, offset, MAX_SIZE_BYTES)
        return {"type": SNAP_ACK, "index": index, "term": term, "offset": offset,
                "complete": bool(complete)}
    raise ValueError(f"not a snapshot transfer payload (tag {tag!r})")


# Files #####################################################################

def _crc_of(fd: int, nbytes: int) -> int:
    """crc32 of the first nbytes of fd, read in READ_BYTES pieces."""
    crc, pos = 0, 0
    while pos < nbytes:
        piece = os.pread(fd, min(READ_BYTES, nbytes - pos), pos)
        if not piece:
            raise OSError(f"file ended at {pos} of {nbytes} bytes while reading")
        crc = zlib.crc32(piece, crc)
        pos += len(piece)
    return crc


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def partial_path(dir: str, index: int) -> str:
    """Where the receiver writes snapshot `index` while it arrives."""
    return os.path.join(dir, f"snapshot-{index:020d}.json.recv")


def done_path(dir: str, index: int) -> str:
    """Where a received and verified snapshot `index` is left for the caller."""
    return os.path.join(dir, f"snapshot-{index:020d}.json.received")


# Sender ####################################################################

class Outgoing:
    """One snapshot file on its way to one peer. Not thread-safe (one greenlet)."""

    def __init__(self, peer: str, index: int, term: int, path: str,
                 chunk_bytes: int = CHUNK_BYTES, window: int = 8, resend_ticks: int = 3,
                 max_silent_ticks: int = 100) -> None:
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes {chunk_bytes} out of range "
                             f"[1, {MAX_CHUNK_BYTES}]")
        if window < 1 or resend_ticks < 1 or max_silent_ticks < 1:
            raise ValueError("window, resend_ticks and max_silent_ticks must be >= 1")
        _check(index, term, 0, 0)
        self.peer, self.index, self.term, self.path = peer, index, term, path
        self.chunk_bytes, self.window = chunk_bytes, window
        self.resend_ticks, self.max_silent_ticks = resend_ticks, max_silent_ticks
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(self._fd).st_size
            if self.size > MAX_SIZE_BYTES:
                raise ValueError(f"{path}: {self.size} bytes (at most {MAX_SIZE_BYTES})")
            self.crc32 = _crc_of(self._fd, self.size)
        except BaseException:
            os.close(self._fd)
            raise
        self.offset = 0                  # the receiver holds [0, offset), as last acked
        self._done = False
        self._sent_at: dict[int, int] = {}    # chunk offset -> tick it was last sent
        self._now: int | None = None          # the latest tick seen (Rule 5)
        self._progress_at: int | None = None  # the tick of the last forward ack

    @property
    def done(self) -> bool:
        """The receiver acked the whole file as complete and verified."""
        return self._done

    def _see(self, now_ticks: int) -> None:
        self._now = now_ticks
        if self._progress_at is None:
            self._progress_at = now_ticks

    def _offsets(self):
        """Chunk offsets in the window. At offset == size that is one empty chunk at
        size: it makes a receiver that holds everything (an empty file, or a resumed
        complete one) verify and say so."""
        if self.offset >= self.size:
            return [self.size]
        end = min(self.size, self.offset + self.window * self.chunk_bytes)
        return range(self.offset, end, self.chunk_bytes)

    def due(self, now_ticks: int) -> list[bytes]:
        """Chunk payloads to send now: chunks in the window never sent, and those whose
        last send is at least resend_ticks old. Nothing once done."""
        self._see(now_ticks)
        if self._done:
            return []
        out = []
        for off in self._offsets():
            last = self._sent_at.get(off)
            if last is not None and now_ticks - last < self.resend_ticks:
                continue
            n = min(self.chunk_bytes, self.size - off)
            data = os.pread(self._fd, n, off)
            if len(data) != n:
                raise OSError(f"{self.path}: read {len(data)} of {n} bytes at {off}; "
                              f"the snapshot changed under the transfer")
            out.append(encode_chunk(self.index, self.term, off, self.size, self.crc32,
                                    data))
            self._sent_at[off] = now_ticks
        return out

    def on_ack(self, ack: dict) -> None:
        """Take an ack from decode(). Acks for another (index, term), claiming more than
        the file, or arriving after done are ignored."""
        if (self._done or ack.get("type") != SNAP_ACK or ack["index"] != self.index
                or ack["term"] != self.term or ack["offset"] > self.size):
            return
        off = ack["offset"]
        if ack["complete"]:
            if off == self.size:
                self._done, self.offset = True, off
                self._progress_at = self._now
                self._sent_at.clear()
            return
        if off > self.offset:
            self.offset = off
            self._progress_at = self._now
            for k in [k for k in self._sent_at if k < off]:
                del self._sent_at[k]
        elif off < self.offset:
            old, self.offset = self.offset, off
            if self._now is not None:          # Rule 2: re-opened chunks count as sent
                for k in self._offsets():
                    if k < old:
                        self._sent_at.setdefault(k, self._now)

    def expired(self, now_ticks: int) -> bool:
        """max_silent_ticks have passed without progress: drop this transfer."""
        self._see(now_ticks)
        return not self._done and now_ticks - self._progress_at >= self.max_silent_ticks

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# Receiver ##################################################################

class Incoming:
    """One snapshot arriving into `dir`. Not thread-safe (one greenlet).

    Creating it deletes the partial files of lower indexes (a newer snapshot replaces
    them) and resumes or restarts the partial file of this index (Rule 4)."""

    def __init__(self, dir: str, index: int, term: int, size: int, crc32: int) -> None:
        _check(index, term, 0, size)
        if not 0 <= crc32 <= 0xFFFFFFFF:
            raise ValueError(f"crc32 {crc32} is not a u32")
        self.dir, self.index, self.term, self.size, self.crc32 = (dir, index, term,
                                                                  size, crc32)
        self.path = partial_path(dir, index)
        self.meta_path = self.path + ".meta"
        self.done_path = done_path(dir, index)
        self.complete = False
        self.failures = 0                # whole-file checks that failed (Rule 3)
        for name in os.listdir(dir):
            m = _PARTIAL_RE.fullmatch(name)
            if m and int(m.group(1)) < index:
                _unlink(os.path.join(dir, name))
        self._meta = {"index": index, "term": term, "size": size, "crc32": crc32}
        if self._read_meta() == self._meta:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        else:
            _unlink(self.path)
            self._write_meta()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            held = os.fstat(self._fd).st_size
            if held > size:                   # cannot be ours: start over
                os.ftruncate(self._fd, 0)
                held = 0
            self._crc = _crc_of(self._fd, held)   # crc32 of [0, offset)
        except BaseException:
            os.close(self._fd)
            raise
        self.offset = held               # the next byte needed; [0, offset) is held

    def _read_meta(self):
        try:
            with open(self.meta_path, "rb") as f:
                return json.loads(f.read(4096))
        except (OSError, ValueError):
            return None

    def _write_meta(self) -> None:
        tmp = self.meta_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(self._meta).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.meta_path)
        _fsync_dir(self.dir)

    def matches(self, chunk: dict) -> bool:
        """The chunk belongs to this transfer (same index, term, size and crc32)."""
        return (chunk.get("type") == SNAP_CHUNK and chunk["index"] == self.index
                and chunk["term"] == self.term and chunk["size"] == self.size
                and chunk["crc32"] == self.crc32)

    def _ack(self) -> bytes:
        return encode_ack(self.index, self.term, self.offset, self.complete)

    def accept(self, chunk: dict) -> bytes:
        """Take a chunk from decode() and return the ack payload to send back. A chunk
        for another transfer (see matches) is ValueError: the caller decides whether
        it starts a new Incoming. OSError from the disk propagates."""
        if not self.matches(chunk):
            raise ValueError(f"chunk for snapshot ({chunk.get('index')}, "
                             f"{chunk.get('term')}) is not this transfer "
                             f"({self.index}, {self.term})")
        if self.complete:
            return self._ack()
        off, data = chunk["offset"], chunk["data"]
        if off <= self.offset < off + len(data):      # Rule 1: the chunk covering offset
            view = memoryview(data)[self.offset - off:]
            pos = self.offset
            while view:
                n = os.pwrite(self._fd, view, pos)
                view, pos = view[n:], pos + n
            self._crc = zlib.crc32(memoryview(data)[self.offset - off:], self._crc)
            self.offset = pos
        if self.offset == self.size:
            self._finish()
        return self._ack()

    def _finish(self) -> None:
        os.fsync(self._fd)
        if os.fstat(self._fd).st_size != self.size or self._crc != self.crc32:
            os.ftruncate(self._fd, 0)                 # Rule 3: start over from 0
            self.offset, self._crc = 0, 0
            self.failures += 1
            return
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, self.done_path)
        _unlink(self.meta_path)
        _fsync_dir(self.dir)
        self.complete = True

    def close(self) -> None:
        """Close the file; a partial one stays for a later resume."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

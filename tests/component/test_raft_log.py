"""Unit tests for dqorch.raft.log: what survives close/open, how a torn tail is cut,
when damage stops start-up (LogCorrupt), hard state, and rotate + snapshot + compact.
Files only under tmp_path; no sockets, no clock."""

import json
import os
from unittest import mock

import pytest

from dqorch.raft import log as rlog
from dqorch import fsm
from dqorch.fsm import SNAPSHOTS
from dqorch.raft.log import HEADER, LogCorrupt, RaftLog, encode


def cmd(i: int) -> dict:
    return {"op": "register", "id": "job-%d" % i, "job": {"n": i, "s": "é✓"},
            "at_ms": 1_700_000_000_000 + i}


def entry(i: int, term: int = 1) -> tuple:
    return (i, term, cmd(i))


def write(lg: RaftLog, first: int, last: int, term: int = 1) -> None:
    data = b"".join(encode(i, term, cmd(i)) for i in range(first, last + 1))
    lg.append(data, last, term)
    os.fsync(lg.fileno())


def opened(path) -> tuple:
    lg = RaftLog(str(path), SNAPSHOTS)
    snap, entries = lg.open()
    return lg, snap, entries


def reopen(lg: RaftLog) -> tuple:
    lg.close()
    return opened(lg.dir)


def segment_files(path) -> list:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def record_size(i: int, term: int = 1) -> int:
    return len(encode(i, term, cmd(i)))


# Round trips ###############################################################

def test_a_new_log_is_empty(tmp_path):
    lg, snap, entries = opened(tmp_path / "d")
    assert (snap, entries) == (None, [])
    assert (lg.term, lg.vote, lg.last_index, lg.last_term) == (0, None, 0, 0)
    assert segment_files(lg.dir) == ["log-%020d.seg" % 1]
    lg.close()


def test_entries_survive_close_and_open(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3, term=1)
    write(lg, 4, 5, term=2)
    lg, snap, entries = reopen(lg)
    assert snap is None
    assert entries == [entry(1), entry(2), entry(3), entry(4, 2), entry(5, 2)]
    assert (lg.last_index, lg.last_term) == (5, 2)
    write(lg, 6, 6, term=2)                   # appends continue where the log ended
    lg, _, entries = reopen(lg)
    assert [e[0] for e in entries] == [1, 2, 3, 4, 5, 6]
    lg.close()


def test_hard_state_round_trips(tmp_path):
    lg, _, _ = opened(tmp_path)
    lg.save_hard_state(7, "orchestrator@10.0.0.2")
    assert (lg.term, lg.vote) == (7, "orchestrator@10.0.0.2")
    lg, _, _ = reopen(lg)
    assert (lg.term, lg.vote) == (7, "orchestrator@10.0.0.2")
    lg.save_hard_state(8, None)
    lg, _, _ = reopen(lg)
    assert (lg.term, lg.vote) == (8, None)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    lg.close()


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = str(tmp_path / "f.json")
    rlog.write_atomic(path, b"x" * 1000)
    rlog.write_atomic(path, b"short")
    with open(path, "rb") as f:
        assert f.read() == b"short"
    assert os.listdir(tmp_path) == ["f.json"]


# Torn tails ################################################################

@pytest.mark.parametrize("cut", [1, 7, HEADER.size - 1, HEADER.size, HEADER.size + 3])
def test_a_torn_last_record_is_cut_and_the_rest_kept(tmp_path, cut):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 5)
    seg = os.path.join(lg.dir, segment_files(lg.dir)[-1])
    lg.close()
    good = os.path.getsize(seg) - record_size(5)
    with open(seg, "r+b") as f:
        f.truncate(good + cut)               # record 5 written only in part
    lg, _, entries = opened(tmp_path)
    assert entries == [entry(i) for i in range(1, 5)]
    assert (lg.last_index, os.path.getsize(seg)) == (4, good)
    write(lg, 5, 6, term=3)                  # the cut record's index is written again
    lg, _, entries = reopen(lg)
    assert entries == [entry(i) for i in range(1, 5)] + [entry(5, 3), entry(6, 3)]
    lg.close()


@pytest.mark.parametrize("garbage", [b"\x00", b"\x00" * 4096, b"\xff" * 30 + b"\x01",
                                     b"not a record at all, just bytes" * 5])
def test_garbage_after_the_last_record_is_cut(tmp_path, garbage):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    seg = os.path.join(lg.dir, segment_files(lg.dir)[-1])
    lg.close()
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(garbage)
    lg, _, entries = opened(tmp_path)
    assert entries == [entry(1), entry(2), entry(3)]
    assert os.path.getsize(seg) == size
    lg.close()


def test_a_changed_byte_in_the_newest_whole_record_is_damage_not_a_torn_tail(tmp_path):
    """The issue's case: a flipped byte in the newest record was cut as a torn tail,
    and a 202'd job answered 404. Every byte of the last batch is there (its mark says
    where it ends) and none is what the disk held before: no crash did that."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    seg = os.path.join(lg.dir, segment_files(lg.dir)[-1])
    lg.close()
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        f.seek(-2, os.SEEK_END)
        f.write(b"!!")                        # right length, wrong crc
    with pytest.raises(LogCorrupt, match="damaged record at byte %d " % (size - record_size(2))):
        opened(tmp_path)
    assert os.path.getsize(seg) == size       # nothing cut


def test_a_last_batch_whole_but_for_an_unwritten_sector_is_still_torn(tmp_path):
    """The crash kept one sector of the last append from the disk: FILL there."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    big = [{"op": "register", "id": "big-%d" % i, "pad": "x" * 700} for i in range(3, 6)]
    lg.append(b"".join(encode(i, 1, c) for i, c in enumerate(big, 3)), 5, 1)
    lg.close()
    seg = os.path.join(tmp_path, segment_files(tmp_path)[-1])
    sector = (record_offsets(seg)[3] // 512 + 1) * 512        # inside record 4
    with open(seg, "r+b") as f:
        f.seek(sector)
        f.write(b"\xff" * 512)
    lg, _, entries = opened(tmp_path)
    assert [e[0] for e in entries] == [1, 2, 3]
    lg.close()


# Damage a crash cannot explain ############################################


def test_a_flipped_byte_mid_last_segment_is_log_corrupt(tmp_path):
    """Cutting there would drop committed records 3-5: a crash cannot explain it."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 5)
    seg = os.path.join(lg.dir, segment_files(lg.dir)[-1])
    lg.close()
    with open(seg, "r+b") as f:
        f.seek(record_size(1) + HEADER.size + 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(LogCorrupt):
        opened(tmp_path)

def two_segments(tmp_path) -> tuple:
    """Entries 1-3 in the first segment, 4-5 in the second; returns (first, second)."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.rotate()
    write(lg, 4, 5)
    lg.close()
    segs = segment_files(tmp_path)
    assert segs == ["log-%020d.seg" % 1, "log-%020d.seg" % 4]
    return tuple(os.path.join(tmp_path, s) for s in segs)


def test_two_segments_read_back_in_order(tmp_path):
    two_segments(tmp_path)
    _, _, entries = opened(tmp_path)
    assert [e[0] for e in entries] == [1, 2, 3, 4, 5]


def test_a_flipped_byte_in_a_non_last_segment_is_log_corrupt(tmp_path):
    first, _ = two_segments(tmp_path)
    pos = record_size(1) + HEADER.size + 5       # inside record 2's body
    with open(first, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(LogCorrupt, match="damaged record"):
        opened(tmp_path)


def test_a_truncated_non_last_segment_is_log_corrupt(tmp_path):
    first, _ = two_segments(tmp_path)
    with open(first, "r+b") as f:
        f.truncate(os.path.getsize(first) - 3)
    with pytest.raises(LogCorrupt):
        opened(tmp_path)
    assert os.path.getsize(first) > record_size(1)   # nothing was cut on the way out


def test_garbage_after_a_non_last_segment_is_log_corrupt(tmp_path):
    first, _ = two_segments(tmp_path)
    with open(first, "ab") as f:
        f.write(b"\x00" * 40)
    with pytest.raises(LogCorrupt):
        opened(tmp_path)


def test_a_gap_in_the_indexes_is_log_corrupt(tmp_path):
    lg, _, _ = opened(tmp_path)
    lg.append(encode(1, 1, cmd(1)) + encode(2, 1, cmd(2)) + encode(4, 1, cmd(4)), 4, 1)
    lg.close()
    with pytest.raises(LogCorrupt, match="index 4 follows 2"):
        opened(tmp_path)


def test_a_missing_middle_segment_is_log_corrupt(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    lg.rotate()
    write(lg, 3, 4)
    lg.rotate()
    write(lg, 5, 6)
    lg.close()
    os.unlink(os.path.join(tmp_path, "log-%020d.seg" % 3))
    with pytest.raises(LogCorrupt):
        opened(tmp_path)


# A log behind its recorded commit (Rule 4) ##################################

def committed(tmp_path, last: int, rotate_at=()) -> RaftLog:
    """Entries 1..last written (a new segment before each index in rotate_at) and
    recorded as committed in hard state, as a clean stop leaves them; closed."""
    lg, _, _ = opened(tmp_path)
    for i in range(1, last + 1):
        if i in rotate_at:
            lg.rotate()
        write(lg, i, i)
    lg.save_hard_state(1, "n1", last)
    lg.close()
    return lg


def test_a_log_cut_at_a_record_boundary_below_the_commit_is_log_behind(tmp_path):
    committed(tmp_path, 5)
    seg = os.path.join(tmp_path, segment_files(tmp_path)[-1])
    data = open(seg, "rb").read()
    cut = record_offsets(seg)[3] - HEADER.size       # before record 4's batch mark
    open(seg, "wb").write(data[:cut])
    with pytest.raises(rlog.LogBehind) as e:
        opened(tmp_path)
    assert str(e.value).startswith(seg + ": the log ends at index 3 ")
    assert "committed entries 4-5 gone" in str(e.value)
    assert os.path.getsize(seg) == cut                # nothing touched


def test_a_deleted_newest_segment_is_log_behind_naming_the_one_left(tmp_path):
    committed(tmp_path, 6, rotate_at=(4,))
    first, newest = [os.path.join(tmp_path, n) for n in segment_files(tmp_path)]
    os.unlink(newest)
    with pytest.raises(rlog.LogBehind, match="^%s: the log ends at index 3 .* committed "
                       "entries 4-6 gone" % first):
        opened(tmp_path)
    assert segment_files(tmp_path) == [os.path.basename(first)]   # none made anew


def test_a_torn_looking_tail_below_the_commit_is_damage_and_never_cut(tmp_path):
    """Cut mid-record: it looks like a torn write, but entry 5 was fsync'd."""
    committed(tmp_path, 5)
    seg = os.path.join(tmp_path, segment_files(tmp_path)[-1])
    size = os.path.getsize(seg) - 7
    with open(seg, "r+b") as f:
        f.truncate(size)
    with pytest.raises(LogCorrupt, match="damaged record at byte .* where committed entry "
                       "5 must be .*hardstate.json records commit 5"):
        opened(tmp_path)
    assert os.path.getsize(seg) == size


def test_a_torn_tail_past_the_commit_is_still_cut(tmp_path):
    """Rule 1 unchanged where hard state gives no evidence: 5 written, 4 recorded."""
    lg = committed(tmp_path, 5)
    lg, _, _ = opened(tmp_path)
    lg.save_hard_state(1, "n1", 4)
    lg.close()
    seg = os.path.join(tmp_path, segment_files(tmp_path)[-1])
    with open(seg, "r+b") as f:
        f.truncate(os.path.getsize(seg) - 7)
    lg, _, entries = opened(tmp_path)
    assert [e[0] for e in entries] == [1, 2, 3, 4] and lg.commit == 4
    lg.close()


def test_a_snapshot_alone_short_of_the_commit_is_log_behind(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.rotate()
    save_snapshot(lg, 3, 1, {})
    write(lg, 4, 5)
    lg.save_hard_state(1, None, 5)
    lg.close()
    os.unlink(os.path.join(tmp_path, "log-%020d.seg" % 4))
    with pytest.raises(rlog.LogBehind, match="snapshot-%020d.json: the log ends at index 3"
                       % 3):
        opened(tmp_path)


def test_a_log_that_reaches_its_commit_opens_and_old_hard_states_need_none(tmp_path):
    """A hard state from before commit was recorded ({"term", "vote"}) reads as 0."""
    committed(tmp_path, 3)
    lg, _, entries = opened(tmp_path)
    assert len(entries) == 3 and lg.commit == 3
    lg.close()
    with open(os.path.join(tmp_path, "hardstate.json"), "w") as f:
        json.dump({"term": 1, "vote": "n1"}, f)
    lg, _, entries = opened(tmp_path)
    assert len(entries) == 3 and lg.commit == 0
    lg.close()


# Snapshots and compaction ##################################################

def save_snapshot(lg: RaftLog, index: int, term: int, state: dict) -> None:
    lg.write_snapshot(index, term, state)


def loaded(snap: dict) -> dict:
    """A loaded snapshot with its streamed blocks of jobs read into one list."""
    state = dict(snap["state"])
    state["jobs"] = [j for block in state.pop("job_blocks") for j in block]
    return dict(snap, state=state)


def test_rotate_snapshot_compact_then_open_returns_only_later_entries(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 4)
    lg.rotate()
    write(lg, 5, 10, term=2)
    save_snapshot(lg, 4, 1, {"old": True})
    lg.rotate()                                       # as Snapshots.now does
    save_snapshot(lg, 10, 2, {"jobs": ["x"]})
    removed = lg.compact(10)
    assert removed == 3                               # two segments and snapshot 4
    assert segment_files(tmp_path) == ["log-%020d.seg" % 11]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("snapshot-")) == \
        ["snapshot-%020d.json" % 10]
    write(lg, 11, 12, term=2)
    lg, snap, entries = reopen(lg)
    assert loaded(snap) == {"index": 10, "term": 2, "total_jobs": 1, "raft": {},
                            "state": {"jobs": ["x"]}}
    assert entries == [entry(11, 2), entry(12, 2)]
    assert (lg.snapshot_index, lg.last_index, lg.last_term) == (10, 12, 2)
    lg.close()


def test_a_snapshot_with_no_later_entries_sets_the_last_index(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 5, term=3)
    lg.rotate()
    save_snapshot(lg, 5, 3, {})
    lg.compact(5)
    lg, snap, entries = reopen(lg)
    assert (snap["index"], entries) == (5, [])
    assert (lg.last_index, lg.last_term, lg.snapshot_index) == (5, 3, 5)
    lg.close()


def test_compact_keeps_a_segment_that_holds_entries_after_the_snapshot(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.rotate()
    write(lg, 4, 8)
    save_snapshot(lg, 6, 1, {"at": 6})                # mid-segment, no rotate
    assert lg.compact(6) == 1
    assert segment_files(tmp_path) == ["log-%020d.seg" % 4]
    lg, snap, entries = reopen(lg)
    assert snap["index"] == 6 and [e[0] for e in entries] == [7, 8]
    lg.close()


def test_rotate_on_an_empty_segment_makes_no_new_file(tmp_path):
    lg, _, _ = opened(tmp_path)
    lg.rotate()
    assert segment_files(tmp_path) == ["log-%020d.seg" % 1]
    write(lg, 1, 1)
    lg.rotate()
    lg.rotate()
    assert segment_files(tmp_path) == ["log-%020d.seg" % 1, "log-%020d.seg" % 2]
    lg.close()


def test_the_newest_snapshot_wins(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 6)
    save_snapshot(lg, 3, 1, {"n": 3})
    save_snapshot(lg, 5, 1, {"n": 5})
    lg, snap, entries = reopen(lg)
    assert loaded(snap)["state"] == {"n": 5, "jobs": []} and [e[0] for e in entries] == [6]
    lg.close()


def test_a_damaged_newest_snapshot_is_log_corrupt(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    lg.close()
    with open(lg.snapshot_path(2), "wb") as f:
        f.write(b'{"index": 2, "ter')
    with pytest.raises(LogCorrupt):
        opened(tmp_path)


def test_a_snapshot_streams_its_jobs_and_checks_their_count(tmp_path):
    lg, _, _ = opened(tmp_path)
    jobs = [{"id": f"j{i}", "seq": i} for i in range(2500)]      # several write chunks
    save_snapshot(lg, 7, 1, {"next_seq": 2500, "jobs": jobs})
    lg, snap, _ = reopen(lg)
    assert loaded(snap)["state"] == {"next_seq": 2500, "jobs": jobs}
    lg.close()
    path = lg.snapshot_path(7)
    with open(path, "rb") as f:
        lines = f.readlines()
    with open(path, "wb") as f:                                  # one job line lost
        f.writelines(lines[:-1])
    lg, snap, _ = opened(tmp_path)
    with pytest.raises(LogCorrupt):
        list(snap["state"]["job_blocks"])


# Torn tail or damage: the cases, through real files ##############

def batches(tmp_path, n: int = 12) -> str:
    """A log of n one-entry appends (as a sequential client makes); the segment."""
    lg, _, _ = opened(tmp_path)
    for i in range(1, n + 1):
        write(lg, i, i)
    lg.close()
    return os.path.join(tmp_path, segment_files(tmp_path)[-1])


def record_offsets(seg: str) -> list:
    """Byte offset of each entry's record (after its batch mark)."""
    out, pos, data = [], 0, open(seg, "rb").read()
    while pos < len(data):
        length, _, index, _ = HEADER.unpack_from(data, pos)
        if index:
            out.append(pos)
        pos += HEADER.size + length
    return out


def test_a_flipped_high_byte_of_a_length_mid_log_is_damage_not_a_torn_tail(tmp_path):
    """The issue's case: the file was cut at that record and 6 entries silently lost."""
    seg = batches(tmp_path)
    size = os.path.getsize(seg)
    pos = record_offsets(seg)[5] + 3            # the high byte of record 6's length
    with open(seg, "r+b") as f:
        f.seek(pos)
        f.write(b"\x7f")
    with pytest.raises(LogCorrupt, match=r"damaged record at byte %d" % (pos - 3)):
        opened(tmp_path)
    assert os.path.getsize(seg) == size          # nothing cut on the way out


def test_zeros_from_the_middle_to_the_end_are_damage(tmp_path):
    seg = batches(tmp_path)
    size = os.path.getsize(seg)
    start = record_offsets(seg)[5]               # record 6 on (its batch mark kept)
    with open(seg, "r+b") as f:
        f.seek(start)
        f.write(b"\0" * (size - start))
    with pytest.raises(LogCorrupt, match="damaged record"):
        opened(tmp_path)
    assert os.path.getsize(seg) == size


def test_a_torn_last_batch_with_an_unwritten_sector_is_cut(tmp_path, caplog):
    """Pages of the last append may reach the disk out of order: a zero sector in the
    middle of it, good records after. Never fsync'd, never acknowledged: cut."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    big = [{"op": "register", "id": "big-%d" % i, "pad": "x" * 700} for i in range(3, 9)]
    lg.append(b"".join(encode(i, 1, c) for i, c in enumerate(big, 3)), 8, 1)
    lg.close()
    seg = os.path.join(tmp_path, segment_files(tmp_path)[-1])
    third = record_offsets(seg)[3]                # record 4, inside the last batch
    sector = (third // 512 + 1) * 512
    with open(seg, "r+b") as f:
        f.seek(sector)
        f.write(b"\0" * 512)
    with caplog.at_level("WARNING"):
        lg, _, entries = opened(tmp_path)
    assert [e[0] for e in entries] == [1, 2, 3]
    assert "cutting a torn log tail" in caplog.text and "bytes=" in caplog.text
    lg.close()


def test_a_changed_byte_in_the_last_batch_with_good_records_after_is_damage(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 6)                               # one append: one batch
    lg.close()
    seg = os.path.join(tmp_path, segment_files(tmp_path)[-1])
    pos = record_offsets(seg)[2] + HEADER.size + 3
    with open(seg, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x20]))
    with pytest.raises(LogCorrupt):
        opened(tmp_path)


def test_a_torn_tail_cut_is_logged_with_what_was_cut(tmp_path, caplog):
    seg = batches(tmp_path, 3)
    with open(seg, "ab") as f:
        f.write(encode(4, 1, cmd(4))[:30])
    with caplog.at_level("WARNING"):
        lg, _, entries = opened(tmp_path)
    assert [e[0] for e in entries] == [1, 2, 3]
    assert "offset=%d bytes=30" % (os.path.getsize(seg)) in caplog.text
    assert "partial record (index 4)" in caplog.text
    lg.close()


def test_an_old_log_without_batch_marks_still_opens(tmp_path):
    """Segments written before batch marks: records only. Read, and a torn tail cut."""
    os.makedirs(tmp_path, exist_ok=True)
    seg = os.path.join(tmp_path, "log-%020d.seg" % 1)
    with open(seg, "wb") as f:
        f.write(b"".join(encode(i, 1, cmd(i)) for i in range(1, 4)) + b"\0" * 10)
    lg, _, entries = opened(tmp_path)
    assert entries == [entry(1), entry(2), entry(3)]
    lg.close()


# Write failures (Rule 2) ####################################################

def test_a_failed_cut_back_stops_writes_until_it_succeeds(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    good_fd, path = lg._fd, os.path.join(tmp_path, segment_files(tmp_path)[-1])
    with open(path, "rb") as f:
        size = rlog.records_end(f.read())           # the open segment has fill after
    lg._fd = os.open(path, os.O_RDONLY)           # writes and truncates now fail for real
    with pytest.raises(OSError):
        lg.append(encode(3, 1, cmd(3)), 3, 1)
    assert lg.unsure == size and lg.last_index == 2
    with pytest.raises(OSError):                  # the cut is retried first, and fails
        lg.append(encode(3, 1, cmd(3)), 3, 1)
    os.close(lg._fd)
    lg._fd = good_fd
    os.pwrite(good_fd, b"half a batch that the failed cut left", size)
    write(lg, 3, 3)                               # the cut succeeds, then the append
    assert lg.unsure is None
    lg, _, entries = reopen(lg)
    assert [e[0] for e in entries] == [1, 2, 3]
    lg.close()


def test_close_never_raises(tmp_path):
    lg, _, _ = opened(tmp_path)
    os.close(lg._fd)                              # EBADF on fsync and close
    lg.close()
    lg.close()


# Snapshots: checksums ######################################################

def snapshot_with_jobs(tmp_path, n=30) -> tuple:
    lg, _, _ = opened(tmp_path)
    jobs = [{"id": f"j{i}", "seq": i, "status": "queued"} for i in range(n)]
    with mock.patch.object(fsm, "JOBS_PER_BLOCK", 4):            # several blocks
        save_snapshot(lg, 9, 1, {"next_seq": n, "jobs": jobs})
    lg.close()
    return lg.snapshot_path(9), jobs


def test_a_snapshot_round_trips_with_checksums(tmp_path):
    path, jobs = snapshot_with_jobs(tmp_path)
    first = open(path, "rb").readline()
    assert first[8:9] == b" " and int(first[:8], 16) >= 0
    lg, snap, _ = opened(tmp_path)
    assert loaded(snap)["state"] == {"next_seq": 30, "jobs": jobs}
    lg.close()


@pytest.mark.parametrize("change", [
    (b'"seq":17', b'"seq":18'),                   # one digit
    (b'"j5","seq":5,"status":"queued"', b'"j5","seq":5,"status":"qXeued"'),
    (b'"next_seq":30', b'"next_seq":31'),          # in the head line
])
def test_a_changed_snapshot_is_refused(tmp_path, change):
    path, _ = snapshot_with_jobs(tmp_path)
    data = open(path, "rb").read()
    assert change[0] in data
    open(path, "wb").write(data.replace(change[0], change[1], 1))
    with pytest.raises(LogCorrupt, match="checksum"):
        lg, snap, _ = opened(tmp_path)
        list(snap["state"]["job_blocks"])


@pytest.mark.parametrize("edit", ["drop_trailer", "swap_lines", "append"])
def test_a_snapshot_missing_its_trailer_or_reordered_is_refused(tmp_path, edit):
    path, _ = snapshot_with_jobs(tmp_path)
    lines = open(path, "rb").readlines()
    if edit == "drop_trailer":
        lines = lines[:-1]
    elif edit == "swap_lines":
        lines[3], lines[4] = lines[4], lines[3]
    else:
        lines.append(lines[2])
    open(path, "wb").writelines(lines)
    lg, snap, _ = opened(tmp_path)
    with pytest.raises(LogCorrupt):
        list(snap["state"]["job_blocks"])


def test_a_format_1_snapshot_still_loads(tmp_path):
    import json
    os.makedirs(tmp_path, exist_ok=True)
    path = os.path.join(tmp_path, "snapshot-%020d.json" % 4)
    with open(path, "w") as f:
        f.write(json.dumps({"index": 4, "term": 1, "state": {"n": 1}, "jobs": 1}) + "\n")
        f.write(json.dumps({"id": "x"}) + "\n")
    lg, snap, _ = opened(tmp_path)
    assert loaded(snap)["state"] == {"n": 1, "jobs": [{"id": "x"}]}
    lg.close()


# Hard state and what else lies in data_dir #################################

def test_a_deleted_hard_state_never_takes_the_term_below_the_log(tmp_path):
    lg, _, _ = opened(tmp_path)
    lg.save_hard_state(2, "n1")
    write(lg, 1, 3, term=2)
    lg.close()
    os.unlink(os.path.join(tmp_path, "hardstate.json"))
    lg, _, _ = opened(tmp_path)
    assert lg.term == 2
    lg.close()


def test_a_hard_state_older_than_a_snapshot_takes_the_snapshot_term(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3, term=5)
    lg.rotate()
    save_snapshot(lg, 3, 5, {})
    lg.compact(3)
    lg.save_hard_state(1, None)
    lg, _, _ = reopen(lg)
    assert lg.term == 5
    lg.close()


@pytest.mark.parametrize("content", [b"", b"{", b'{"term": "x"}', b"[]", b'{"vote": 1}'])
def test_a_damaged_hard_state_is_one_clear_error(tmp_path, content):
    os.makedirs(tmp_path, exist_ok=True)
    with open(os.path.join(tmp_path, "hardstate.json"), "wb") as f:
        f.write(content)
    with pytest.raises(LogCorrupt, match="hardstate.json: damaged hard state"):
        opened(tmp_path)


def test_stray_files_are_left_alone_and_logged(tmp_path, caplog):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 2)
    lg.close()
    for name in ("log-abc.seg", "snapshot-backup.json", "log-1.seg.bak"):
        with open(os.path.join(tmp_path, name), "w") as f:
            f.write("an operator's copy")
    with caplog.at_level("WARNING"):
        lg, _, entries = opened(tmp_path)
    assert [e[0] for e in entries] == [1, 2]
    assert "log-abc.seg" in caplog.text and "snapshot-backup.json" in caplog.text
    lg.compact(2)
    assert os.path.exists(os.path.join(tmp_path, "snapshot-backup.json"))
    lg.close()


@pytest.mark.parametrize("name", ["log-%020d.seg" % 5, "snapshot-%020d.json" % 5,
                                  "hardstate.json"])
def test_a_directory_named_like_our_file_is_one_clear_error(tmp_path, name):
    os.makedirs(os.path.join(tmp_path, name))
    with pytest.raises(LogCorrupt, match="directory|not a regular file"):
        opened(tmp_path)


def test_unfinished_writes_are_removed_on_open(tmp_path, caplog):
    os.makedirs(tmp_path, exist_ok=True)
    for name in ("snapshot-%020d.json.tmp" % 7, "hardstate.json.tmp"):
        with open(os.path.join(tmp_path, name), "wb") as f:
            f.write(b"x" * 100)
    with caplog.at_level("INFO"):
        lg, _, _ = opened(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert "removing an unfinished write" in caplog.text
    lg.close()


def test_write_atomic_leaves_no_tmp_when_the_write_fails(tmp_path):
    def chunks():
        yield b"part"
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        rlog.write_atomic(str(tmp_path / "f.json"), chunks())
    assert os.listdir(tmp_path) == []


# What Raft needs of the log (issue 9) #######################################

def test_append_refuses_a_gap_or_a_term_going_back(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3, term=2)
    with pytest.raises(ValueError, match="entry 5"):
        lg.append(encode(5, 2, cmd(5)), 5, 2)
    with pytest.raises(ValueError, match="term 1"):
        lg.append(encode(4, 1, cmd(4)), 4, 1)
    lg, _, entries = reopen(lg)
    assert [e[0] for e in entries] == [1, 2, 3]
    lg.close()


@pytest.mark.parametrize("cut", [2, 4, 5, 7, 9])
def test_truncate_from_drops_the_tail_across_segments(tmp_path, cut):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3, term=1)
    lg.rotate()
    write(lg, 4, 6, term=2)
    lg.rotate()
    write(lg, 7, 8, term=3)
    lg.truncate_from(cut)
    want = [i for i in range(1, 9) if i < cut]
    assert lg.last_index == (want[-1] if want else 0)
    assert lg.last_term == {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3}[lg.last_index]
    write(lg, lg.last_index + 1, lg.last_index + 2, term=4)   # the leader's entries
    lg, _, entries = reopen(lg)
    assert [e[0] for e in entries] == want + [want[-1] + 1, want[-1] + 2]
    assert [e[1] for e in entries][-2:] == [4, 4]
    assert all(first <= want[-1] + 1 for first, _ in lg.segments())
    lg.close()


def test_truncate_from_never_reaches_below_the_snapshot(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 4)
    lg.rotate()
    save_snapshot(lg, 4, 1, {})
    lg.compact(4, 1)
    write(lg, 5, 6, term=2)
    with pytest.raises(ValueError):
        lg.truncate_from(3)
    lg.truncate_from(5)
    assert (lg.last_index, lg.last_term) == (4, 1)
    write(lg, 5, 5, term=3)
    lg, snap, entries = reopen(lg)
    assert snap["index"] == 4 and entries == [entry(5, 3)]
    lg.close()


def test_install_snapshot_replaces_the_log(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.rotate()
    write(lg, 4, 5, term=2)                      # a divergent tail the leader never had
    lg.install_snapshot(9, 3, {"jobs": [{"id": "from-leader"}]})
    assert (lg.last_index, lg.last_term, lg.snapshot_index) == (9, 3, 9)
    write(lg, 10, 10, term=3)
    lg, snap, entries = reopen(lg)
    assert loaded(snap)["state"]["jobs"] == [{"id": "from-leader"}]
    assert entries == [entry(10, 3)]
    assert segment_files(tmp_path) == ["log-%020d.seg" % 10]
    lg.close()


def test_a_local_snapshot_older_than_the_installed_one_compacts_nothing(tmp_path):
    """A node's own snapshot that finishes after the leader's (newer) one was
    installed once moved snapshot_index back: every later term_at/entries was off."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.install_snapshot(9, 3, {"jobs": []})
    write(lg, 10, 12, term=3)
    assert lg.compact(5, 1) == 0
    assert lg.snapshot_index == 9 and lg.term_at(10) == 3
    assert [e[0] for e in lg.entries(10, 13)] == [10, 11, 12]
    lg.close()


def test_an_install_moved_into_place_then_failed_can_be_done_again(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    src = tmp_path / "in.received"
    other = RaftLog(str(tmp_path / "other"), SNAPSHOTS)
    other.open()
    other.write_snapshot(9, 3, {"jobs": [{"id": "x"}]})
    os.replace(other.snapshot_path(9), src)
    real = lg._new_segment

    def full(first):
        raise OSError(28, "No space left on device")
    lg._new_segment = full
    with pytest.raises(OSError):
        lg.install_snapshot(9, 3, path=str(src))
    lg._new_segment = real
    lg.install_snapshot(9, 3, path=str(src))      # the file is already in place
    assert (lg.last_index, lg.snapshot_index) == (9, 9)
    lg.close()


@pytest.mark.parametrize("seed", range(25))
def test_entries_and_terms_read_back_through_every_operation(tmp_path, seed):
    """A random run of appends, rotations, truncations, snapshots and reopens against a
    plain dict: entries(lo, hi) and term_at() always read what the model holds."""
    import random
    rnd = random.Random(seed)
    lg, _, _ = opened(tmp_path)
    model, term, snap = {}, 1, (0, 0)

    def check():
        assert lg.last_index == (max(model) if model else snap[0])
        for i in range(snap[0] + 1, lg.last_index + 1):
            assert lg.term_at(i) == model[i][0]
        if lg.last_index > snap[0]:
            lo = rnd.randint(snap[0] + 1, lg.last_index)
            got = lg.entries(lo, lg.last_index + 1)
            assert got == [(i, model[i][0], model[i][1]) for i in range(lo, lg.last_index + 1)]
        assert lg.term_at(snap[0]) == snap[1]
        assert lg.term_at(lg.last_index + 1) is None

    for _ in range(40):
        op = rnd.random()
        if op < 0.5:
            term += rnd.random() < 0.3
            first, n = lg.last_index + 1, rnd.randint(1, 5)
            data = b"".join(encode(i, term, cmd(i)) for i in range(first, first + n))
            lg.append(data, first + n - 1, term)
            os.fsync(lg.fileno())
            model.update((i, (term, cmd(i))) for i in range(first, first + n))
        elif op < 0.6:
            lg.rotate()
        elif op < 0.75 and lg.last_index > snap[0]:
            cut = rnd.randint(snap[0] + 1, lg.last_index)
            lg.truncate_from(cut)
            model = {i: v for i, v in model.items() if i < cut}
        elif op < 0.85 and lg.last_index > snap[0]:
            at = rnd.randint(snap[0] + 1, lg.last_index)
            lg.rotate()
            save_snapshot(lg, at, model[at][0], {})
            lg.compact(at, model[at][0])
            snap = (at, model[at][0])
            model = {i: v for i, v in model.items() if i > at}
        else:
            lg, _, _ = reopen(lg)
        check()
    lg.close()


def test_entries_refuses_a_range_it_does_not_hold(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    for lo, hi in ((0, 2), (2, 5), (3, 2)):
        with pytest.raises(ValueError):
            lg.entries(lo, hi)
    assert lg.entries(2, 2) == []
    lg.close()


def test_a_snapshot_keeps_user_json_exact_through_the_files(tmp_path):
    """Format 3 reads job lines with orjson, which turns integers beyond 64 bits into
    floats: a job's own JSON must therefore never be decoded on the way back."""
    from dqorch import state as S
    from tests.unit.helpers import T0, reg
    st = S.State()
    big = 123456789012345678901234567890
    c = reg("j1", T0)
    c["job"]["payload"] = {"n": big, "s": "é\u2028", "f": 1e16}
    S.apply(st, c)
    lg = RaftLog(str(tmp_path), SNAPSHOTS)
    lg.open()
    lg.write_snapshot(1, 1, S.to_snapshot(st))
    snap = lg.read_snapshot(1)
    again = S.from_snapshot(snap["state"])
    assert again.jobs["j1"]["payload"] == st.jobs["j1"]["payload"]
    assert json.loads(again.jobs["j1"]["payload"]) == {"n": big, "s": "é\u2028", "f": 1e16}
    assert again.jobs["j1"] == st.jobs["j1"]


def rewrite_snapshot(path: str, lines: list) -> None:
    """Write lines of JSON as a snapshot with valid checksums throughout."""
    import zlib
    out = [b"%08x " % zlib.crc32(body) + body + b"\n" for body in lines]
    body = json.dumps({"end": json.loads(lines[0])["jobs"],
                       "crc32": zlib.crc32(b"".join(out))}).encode()
    out.append(b"%08x " % zlib.crc32(body) + body + b"\n")
    with open(path, "wb") as f:
        f.writelines(out)


@pytest.mark.parametrize("head, blocks, match", [
    ({"format": 5}, [[1]], "format 5, this version reads 1-4"),
    ({}, [[1, 2], [3, 4]], "the block from job 3 is not a block of the 3 jobs"),
    ({}, [[1], {"x": 1}, [3]], "the block from job 2 is not a block"),
    ({}, [[1], [], [2, 3]], "the block from job 2 is not a block"),
])
def test_a_snapshot_whose_blocks_disagree_with_its_head_is_refused(tmp_path, head, blocks,
                                                                   match):
    """Checksums can be right and the shape still wrong (a bug, a newer version):
    LogCorrupt names what, never a partial load."""
    path, _ = snapshot_with_jobs(tmp_path, n=3)
    head = dict({"format": 4, "index": 9, "term": 1, "state": {}, "jobs": 3}, **head)
    rewrite_snapshot(path, [json.dumps(x).encode() for x in [head] + blocks])
    with pytest.raises(LogCorrupt, match=match):
        lg, snap, _ = opened(tmp_path)
        list(snap["state"]["job_blocks"])


def test_a_big_file_is_synced_as_it_is_written(tmp_path, monkeypatch):
    """Dirty data left to one fsync at the end made the log's fsyncs wait for a 400 MB
    snapshot's writeback (60-100 ms commit rounds): write_atomic syncs as it goes."""
    syncs = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    monkeypatch.setattr(rlog, "SYNC_EVERY_BYTES", 1000)
    chunks = [bytes([65 + i]) * 600 for i in range(10)]
    path = str(tmp_path / "big")
    rlog.write_atomic(path, chunks)
    assert open(path, "rb").read() == b"".join(chunks)
    assert len(syncs) >= 4


def test_compact_goes_on_when_a_file_it_removes_is_gone_already(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 4)
    lg.rotate()
    save_snapshot(lg, 2, 1, {})
    save_snapshot(lg, 4, 1, {})
    lg.rotate()
    seen = []

    def remove(path):
        seen.append(os.path.basename(path))
        os.unlink(path)
        raise FileNotFoundError(path)              # as if an install removed it first
    assert lg.compact(4, 1, remove=remove) == 2
    assert sorted(seen) == ["log-%020d.seg" % 1, "snapshot-%020d.json" % 2]
    lg.close()


# Fill ahead (Rule 3) ########################################################
# A crash image: the directory copied while the log is open (its last append
# fsync'd), as a kill -9 or a power cut after that fsync leaves it.

def crash_image(lg: RaftLog, dst) -> str:
    import shutil
    shutil.copytree(lg.dir, dst)
    return str(dst)


def test_the_open_segment_is_filled_ahead_and_a_crash_image_opens(tmp_path):
    lg, _, _ = opened(tmp_path / "a")
    write(lg, 1, 5)
    seg = os.path.join(lg.dir, segment_files(lg.dir)[-1])
    data = open(seg, "rb").read()
    end = rlog.records_end(data)
    assert end == len(rlog.batch_mark(0)) + sum(record_size(i) for i in range(1, 6))
    assert len(data) >= end + rlog.FILL_AHEAD and not data[end:].strip(b"\xff")
    img = crash_image(lg, tmp_path / "b")
    lg2, _, entries = opened(img)
    assert entries == [entry(i) for i in range(1, 6)] and lg2.last_index == 5
    write(lg2, 6, 7)                     # at the records' end, not at the file's
    lg3, _, entries = opened(crash_image(lg2, tmp_path / "c"))
    assert entries == [entry(i) for i in range(1, 8)]
    for x in (lg, lg2, lg3):
        x.close()


def test_close_and_rotation_cut_the_fill(tmp_path):
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.rotate()
    write(lg, 4, 4)
    lg.close()
    for name in segment_files(tmp_path):
        data = open(os.path.join(tmp_path, name), "rb").read()
        assert data and rlog.records_end(data) == len(data)
    lg, _, entries = opened(tmp_path)
    assert entries == [entry(i) for i in range(1, 5)]
    lg.close()


def test_a_torn_append_into_the_fill_is_cut(tmp_path, caplog):
    lg, _, _ = opened(tmp_path / "a")
    write(lg, 1, 3)
    img = crash_image(lg, tmp_path / "b")
    lg.close()
    seg = os.path.join(img, segment_files(img)[-1])
    end = rlog.records_end(open(seg, "rb").read())
    with open(seg, "r+b") as f:                  # the next append, half written
        f.seek(end)
        f.write((rlog.batch_mark(record_size(4)) + encode(4, 1, cmd(4)))[:40])
    with caplog.at_level("WARNING"):
        lg, _, entries = opened(img)
    assert entries == [entry(i) for i in range(1, 4)]
    mark = len(rlog.batch_mark(0))               # the mark is whole: the record is cut
    assert "cutting a torn log tail" in caplog.text
    assert "offset=%d bytes=%d" % (end + mark, 40 - mark) in caplog.text
    write(lg, 4, 4)
    lg, _, entries = reopen(lg)
    assert entries == [entry(i) for i in range(1, 5)]
    lg.close()


def test_zeros_over_the_last_batches_with_fill_after_are_damage(tmp_path):
    """Fill is 0xFF, never zeros: zeroed records before the fill still show that
    later batches were there (the records end after them), as the file's end did."""
    lg, _, _ = opened(tmp_path / "a")
    for i in range(1, 13):
        write(lg, i, i)
    img = crash_image(lg, tmp_path / "b")
    lg.close()
    seg = os.path.join(img, segment_files(img)[-1])
    data = open(seg, "rb").read()
    start, end = record_offsets(seg)[5], rlog.records_end(data)
    with open(seg, "r+b") as f:
        f.seek(start)
        f.write(b"\0" * (end - start))
    with pytest.raises(LogCorrupt, match="damaged record"):
        opened(img)
    assert open(seg, "rb").read()[:end] == data[:start] + b"\0" * (end - start)


def test_fill_left_in_a_non_last_segment_is_not_damage(tmp_path):
    """A crash between a rotation and the cut of the old segment's fill."""
    lg, _, _ = opened(tmp_path)
    write(lg, 1, 3)
    lg.rotate()
    write(lg, 4, 5)
    lg.close()
    with open(os.path.join(tmp_path, segment_files(tmp_path)[0]), "ab") as f:
        f.write(b"\xff" * 5000)
    lg, _, entries = opened(tmp_path)
    assert entries == [entry(i) for i in range(1, 6)]
    lg.close()


def test_a_failed_fill_is_one_line_and_the_append_goes_on(tmp_path, caplog):
    import errno
    real = os.pwrite

    def no_room_for_fill(fd, data, pos):
        if isinstance(data, bytes) and data[:1] == b"\xff":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, pos)
    lg, _, _ = opened(tmp_path)
    with mock.patch.object(rlog.os, "pwrite", no_room_for_fill), \
            caplog.at_level("WARNING"):
        for i in range(1, 4):
            write(lg, i, i)
    assert caplog.text.count("cannot fill the log segment ahead") == 1
    write(lg, 4, 4)                              # fill works again
    lg, _, entries = reopen(lg)
    assert entries == [entry(i) for i in range(1, 5)]
    lg.close()

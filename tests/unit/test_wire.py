"""Raft messages as bytes (raft/wire.py Rule 1): what round-trips, and what an
authenticated but malformed payload becomes: ValueError, never anything else."""
import pytest

from dqorch.raft import core as C
from dqorch.raft import wire


def test_every_field_round_trips():
    m = C.Message(C.VOTE_RESP, frm="a", to="b", term=7, index=3, log_term=2, commit=1,
                  reject=True, hint=9, context=C.CAMPAIGN_TRANSFER, api="h:1")
    assert wire.decode("a", "b", wire.encode(m)) == m


@pytest.mark.parametrize("bad", [
    b"", b"[]", b"{", b'{"t":"vote"}', b'{"t":"nope","to":"b"}',
    b'{"t":"vote","to":"c"}', b'{"t":"vote","to":"b","term":-1}',
    b'{"t":"vote","to":"b","term":1.5}', b'{"t":"vote","to":"b","reject":1}',
    b'{"t":"vote","to":"b","api":5}', b'{"t":"vote","to":"b","e":[[1,1,{}]]}',
    b'{"t":"append","to":"b","e":[[2,1,{}]]}', b'{"t":"append","to":"b","e":[[1,0,{}]]}',
    b'{"t":"append","to":"b","e":[[1,1,[]]]}', b'{"t":"snapshot","to":"b"}',
    b'{"t":"append","to":"b","index":3,"e":[[4,1,{}],[6,1,{}]]}',
    b"\xff\xfe"])
def test_a_malformed_message_is_a_value_error(bad):
    with pytest.raises(ValueError):
        wire.decode("a", "b", bad)


def test_entries_kept_as_json_bytes_go_out_as_the_same_json():
    """node.py keeps applied entries as their command's JSON; a follower gets the
    command either way, integers beyond 64 bits included (the stdlib's path)."""
    import json
    cmd = {"op": "register", "id": "j1", "job": {"payload": {"n": 2 ** 70, "s": "é"}}}
    kept = json.dumps(cmd).encode()
    for first in (kept, cmd):
        m = C.Message(C.APPEND, frm="a", to="b", term=2, index=4, log_term=1,
                      entries=(C.Entry(5, 2, first), C.Entry(6, 2, None), C.Entry(7, 2, {"op": "x"})))
        got = wire.decode("a", "b", wire.encode(m))
        assert [e.data for e in got.entries] == [cmd, None, {"op": "x"}]

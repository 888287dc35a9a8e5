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

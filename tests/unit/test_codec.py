"""dqorch.codec: orjson's speed without its gaps (integers beyond 64 bits, nesting it
reads but cannot write)."""
import pytest

from dqorch import codec


@pytest.mark.parametrize("doc", [
    {"n": 123456789012345678901234567890, "m": -(2 ** 64) - 1},   # beyond 64 bits
    {"id": "1234567890123456789x", "n": 2 ** 63 - 1},              # 19 digits, in a string
    {"f": 1e16, "g": -0.25, "s": "é\u2028\U0001f600", "z": None},
])
def test_what_is_read_is_what_was_written(doc):
    text = codec.dumps(doc)
    back = codec.loads(text)
    assert back == doc
    assert [type(v) for v in back.values()] == [type(v) for v in doc.values()]


@pytest.mark.parametrize("depth", [10, 254, 255, 600, 900])
def test_any_nesting_it_reads_it_can_write(depth):
    doc = codec.loads(b'{"a":' * depth + b"1" + b"}" * depth)
    assert codec.loads(codec.dumps(doc)) == doc


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e400}',
                                 b'{"a": NaN, "n": 12345678901234567890}',
                                 b'{"a": 1e400, "n": 12345678901234567890}'])
def test_what_json_has_not_is_refused_by_both_paths(raw):
    with pytest.raises(ValueError):
        codec.loads(raw)


def test_records_write_by_to_record_and_other_objects_are_refused():
    class Rec:
        def to_record(self):
            return [1, "a"]
    assert codec.dumps({"r": Rec(), "big": 2 ** 70}) == b'{"r":[1,"a"],"big":%d}' % 2 ** 70
    with pytest.raises(TypeError):
        codec.dumps({"x": object()})

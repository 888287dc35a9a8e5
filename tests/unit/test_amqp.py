"""dqorch/amqp.py encodes a basic.publish byte for byte as pika does (pika's own
marshalling is the reference), and refuses what it cannot encode."""
import random
import string

import pika
import pytest
from pika import frame, spec

from dqorch import amqp


def pika_bytes(channel, exchange, routing_key, mandatory, fields, body, max_body):
    props = pika.BasicProperties(**fields)
    out = [frame.Method(channel, spec.Basic.Publish(
        exchange=exchange, routing_key=routing_key, mandatory=mandatory)).marshal(),
        frame.Header(channel, len(body), props).marshal()]
    for start in range(0, len(body), max_body):
        out.append(frame.Body(channel, body[start:start + max_body]).marshal())
    return b"".join(out)


def text(rng, n):
    return "".join(rng.choice(string.ascii_letters + "-_.é") for _ in range(n))


def random_fields(rng):
    fields = {}
    if rng.random() < 0.8:
        fields["content_type"] = "application/json"
    if rng.random() < 0.7:
        fields["headers"] = {text(rng, rng.randint(1, 12)): rng.choice(
            [0, 1, -1, rng.randint(-2**40, 2**40), 2**31 - 1, -2**31, 2**31, text(rng, 5)])
            for _ in range(rng.randint(0, 4))}
    for key, values in (("delivery_mode", (1, 2)), ("priority", (0, 1, 5, 10, 255))):
        if rng.random() < 0.7:
            fields[key] = rng.choice(values)
    if rng.random() < 0.8:
        fields["message_id"] = text(rng, rng.randint(0, 120))
    if rng.random() < 0.7:
        fields["timestamp"] = rng.randint(0, 2**40)
    if rng.random() < 0.7:
        fields["app_id"] = "dqorch"
    return fields


def test_same_bytes_as_pika_for_random_messages():
    rng = random.Random(11)
    for _ in range(2000):
        fields = random_fields(rng)
        body = rng.randbytes(rng.choice([0, 1, 50, 300, 5000]))
        max_body = rng.choice([4088, 131064, 100])
        args = (rng.randint(1, 65535), rng.choice(["", "jobs.exchange", text(rng, 30)]),
                rng.choice(["job.high", "status.update", text(rng, 120)]),
                rng.random() < 0.5)
        ours = amqp.publish(*args, amqp.properties(**fields), body, max_body)
        assert ours == pika_bytes(*args, fields, body, max_body), fields


def test_job_properties_are_the_same_bytes_as_pikas_for_the_same_fields():
    rng = random.Random(12)
    for _ in range(1000):
        attempt, term = rng.choice([0, 1, 3, 2**31]), rng.randint(1, 2**33)
        priority = rng.choice([1, 5, 10])
        message_id = rng.choice([None, "", text(rng, rng.randint(1, 120))])
        timestamp = rng.randint(0, 2**40)
        fields = dict(content_type="application/json",
                      headers={"x-dq-attempt": attempt, "x-dq-term": term},
                      delivery_mode=2, priority=priority, timestamp=timestamp,
                      app_id="dqorch")
        if message_id is not None:
            fields["message_id"] = message_id
        props = amqp.job_properties(attempt, term, priority, message_id, timestamp)
        assert props == amqp.properties(**fields)
        assert amqp.publish(1, "jobs.exchange", "job.high", True, props, b"{}", 4088) \
            == pika_bytes(1, "jobs.exchange", "job.high", True, fields, b"{}", 4088)


def test_a_body_longer_than_a_frame_is_split_as_pika_splits_it():
    body = bytes(range(256)) * 40
    ours = amqp.publish(1, "x", "y", True, amqp.properties(), body, 1000)
    assert ours == pika_bytes(1, "x", "y", True, {}, body, 1000)
    assert ours.count(b"\x03\x00\x01") >= 11      # eleven body frames


@pytest.mark.parametrize("fields", [{"message_id": "x" * 256}, {"app_id": "é" * 128},
                                    {"headers": {"k": 1.5}}, {"headers": {"k": True}},
                                    {"headers": {"k" * 300: 1}}])
def test_what_cannot_be_encoded_is_refused(fields):
    with pytest.raises((ValueError, TypeError)):
        amqp.properties(**fields)


def test_confirms_are_read_as_pika_marshals_them_and_anything_else_is_left_to_pika():
    rng = random.Random(13)
    for _ in range(500):
        channel = rng.randint(1, 65535)
        want, data = [], []
        for _ in range(rng.randint(1, 30)):
            tag, multiple = rng.randint(1, 2**63 - 1), rng.random() < 0.5
            if rng.random() < 0.8:
                method, acked = spec.Basic.Ack(delivery_tag=tag, multiple=multiple), True
            else:
                method, acked = spec.Basic.Nack(delivery_tag=tag, multiple=multiple,
                                                requeue=rng.random() < 0.5), False
            data.append(frame.Method(channel, method).marshal())
            want.append((tag, multiple, acked))
        data = b"".join(data)
        assert amqp.confirms(data, channel) == want
        assert amqp.confirms(data, channel % 65535 + 1) is None      # another channel
        assert amqp.confirms(data[:-1], channel) is None              # a torn frame
        other = frame.Method(channel, spec.Basic.Return(
            reply_code=312, reply_text="NO_ROUTE", exchange="x", routing_key="k")).marshal()
        assert amqp.confirms(data + other, channel) is None
        heartbeat = frame.Heartbeat().marshal()
        assert amqp.confirms(heartbeat + data, channel) is None

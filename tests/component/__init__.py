"""Component tests: one dqorch part against the real things beneath it, in-process.

The rule that sorts a test module: it belongs here, not in tests/unit, when it opens a
socket (TCP or UDP, loopback included), writes files other than one config file in
tmp_path, or waits on real time (gevent.sleep or time.sleep of more than 0, a timeout
it expects to fire). tests/unit stays pure and fast: memory only, reading the
checkout's own files allowed. tests/integration starts real dqorch.py processes and a
real RabbitMQ. Shared helpers stay in tests/unit/helpers.py (import it as
tests.unit.helpers); none of these modules imports another test module."""

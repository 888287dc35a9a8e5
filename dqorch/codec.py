"""JSON as the node writes and reads it: raft/codec.py, which the log and the wire
encode commands with (raft/ imports nothing of dqorch outside raft/), here under the
name the rest of dqorch knows."""
from .raft.codec import dumps, loads, stdlib_loads  # noqa: F401

"""Blocking calls (fsync, unlink, a hard state write) in the hub's threadpool."""
from __future__ import annotations

import gevent


def in_thread(fn, *args):
    """fn(*args) in the hub's threadpool; its exception is raised here. (Raised inside
    the pool, gevent also prints it as a traceback: 79 of them in one full-disk minute,
    for errors the caller logs in one line.)"""
    def run():
        try:
            return fn(*args), None
        except BaseException as e:     # noqa: B902 - carried back to the caller
            return None, e
    value, error = gevent.get_hub().threadpool.apply(run)
    if error is not None:
        raise error
    return value

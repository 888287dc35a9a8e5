"""Blocking calls (fsync, unlink, a hard state write) off the hub: in_thread for the
occasional one (the hub's threadpool), Lane for the commit loop's fsyncs."""
from __future__ import annotations

import _queue
import collections

import gevent
import gevent.hub
from gevent import monkey

_start_thread = monkey.get_original("_thread", "start_new_thread")


def _outcome(fn, args) -> tuple:
    """(fn(*args), None), or (None, the exception it raised), to be raised by the
    caller in its own greenlet."""
    try:
        return fn(*args), None
    except BaseException as e:         # noqa: B902 - carried back to the caller
        return None, e


def in_thread(fn, *args):
    """fn(*args) in the hub's threadpool; its exception is raised here. (Raised inside
    the pool, gevent also prints it as a traceback: 79 of them in one full-disk minute,
    for errors the caller logs in one line.)"""
    value, error = gevent.get_hub().threadpool.apply(_outcome, (fn, args))
    if error is not None:
        raise error
    return value


class Lane:
    """One OS thread of its own that runs calls in order, each answered to the greenlet
    that made it, for a caller that hands off often (the commit loop's fsyncs): the
    hub's threadpool makes a watcher, a result and a condition round per call and
    resizes itself; this keeps one watcher and one C queue. ~25-40 µs less CPU a call
    on this VM (docs/BENCHMARKS.md, "fsync hand-off").

    Its thread starts with the first call and lives as long as the process (a daemon,
    blocked in the queue, holding no lock a forked child could need). The watcher holds
    the hub's loop only while a call is out."""

    def __init__(self) -> None:
        self._calls = _queue.SimpleQueue()    # the C one: gevent does not patch it
        self._done: collections.deque = collections.deque()
        self._async = None                    # set once the thread runs
        self._out = 0

    def call(self, fn, *args):
        """fn(*args) in the lane's thread; its exception is raised here. When its
        thread could not start (a process out of threads): in the hub's threadpool."""
        if self._async is None:
            self._start()
        if self._async is None:
            return in_thread(fn, *args)
        waiter = gevent.hub.Waiter()
        self._out += 1
        self._async.ref = True
        self._calls.put((fn, args, waiter))
        try:
            value, error = waiter.get()
        finally:
            self._out -= 1
            if not self._out:
                self._async.ref = False
        if error is not None:
            raise error
        return value

    def _start(self) -> None:
        watcher = gevent.get_hub().loop.async_()
        watcher.start(self._answer)
        watcher.ref = False
        try:
            _start_thread(self._run, (watcher,))
        except RuntimeError:              # can't start new thread: the pool will do
            watcher.stop()
            watcher.close()
            return
        self._async = watcher

    def _run(self, watcher) -> None:      # the lane's thread
        while True:
            fn, args, waiter = self._calls.get()
            self._done.append((waiter, _outcome(fn, args)))
            # Hold nothing of this call until the next one (a failed fsync's
            # traceback reaches the caller's 4 MiB batch).
            del fn, args, waiter
            try:
                watcher.send()
            except Exception:             # the hub's loop is gone: nobody waits
                return

    def _answer(self) -> None:            # the hub, woken by send()
        while self._done:
            waiter, out = self._done.popleft()
            waiter.switch(out)            # stored if its greenlet no longer waits

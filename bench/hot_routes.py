"""The hot routes (api.hot_routes) against bottle's routing, in-process: the WSGI app
over the in-process tests' fake node (no sockets, no log), a heartbeat and a status
report of an unknown job, each way in turn --rounds times.

  python bench/hot_routes.py [--rounds 7] [--calls 20000]
"""
import argparse
import io
import json
import os
import statistics
import sys
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dqorch import api  # noqa: E402
from tests.unit.helpers import fake_services  # noqa: E402

REQUESTS = {
    "heartbeat": ("/api/workers/heartbeat", {"workerId": "w1", "workerType": "py"}),
    "status report": ("/api/jobs/status", {"jobId": "nope", "status": "running",
                                           "workerId": "w1"}),
}


def environ_of(path: str, body: bytes):
    def environ() -> dict:
        return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "",
                "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
                "HTTP_HOST": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1",
                "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    return environ


def start_response(status, headers, exc_info=None):
    pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20000)
    a = p.parse_args()
    for label, (path, body) in REQUESTS.items():
        environ = environ_of(path, json.dumps(body).encode())
        app = api.make_app(fake_services())
        ways = {"bottle": app, "hot_routes": api.hot_routes(app)}
        res = {k: [] for k in ways}
        for _ in range(a.rounds):
            for name, wsgi in ways.items():
                t = timeit.timeit(lambda: b"".join(wsgi(environ(), start_response)),
                                  number=a.calls)
                res[name].append(t / a.calls * 1e6)
        print(f"{label}: " + "; ".join(
            f"{name} median {statistics.median(v):.1f} µs (min {min(v):.1f})"
            for name, v in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The floor: the fastest register handler a stack (bottle + an HTTP server) can serve.

It parses the body and stores the job in a dict, nothing else: no validation, no
durability, no broker. bench/register.py measures the node against it in the same run.
--server pywsgi (the default): bottle on gevent.pywsgi, the floor the node was measured
against until issue 30, kept as the reference it was. --server httptools: the same app
on the node's own front end (dqorch/http_fast.py, llhttp): the new floor.
--fsync FILE: the durable floor. Each register also writes its body into FILE and
fsyncs it before answering, the cheapest way to make it durable (one write into blocks
already written, as raft/log.py's fill ahead does, then an inline fsync): what no
durable handler in this stack can beat on one connection.
Usage: python bench/floor.py --port 18081 [--server pywsgi|httptools] [--fsync FILE]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402

import sys  # noqa: E402

import bottle  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

app = bottle.Bottle()
jobs = {}
durable = {"fd": None, "at": 0}
FILL = 256 << 20


@app.post("/api/jobs/register")
def register():
    body = bottle.request.body.read()
    job = json.loads(body)
    job_id = str(job.get("id") or uuid.uuid4())
    jobs[job_id] = job
    fd = durable["fd"]
    if fd is not None:
        at = durable["at"] % (FILL - len(body))
        os.pwrite(fd, body, at)
        os.fsync(fd)
        durable["at"] = at + len(body)
    bottle.response.status = 202
    bottle.response.content_type = "application/json"
    return json.dumps({"status": "accepted", "job_id": job_id})


@app.get("/api/health")
def health():
    # Not part of the floor's cost; lets the harness wait for it like for a node.
    bottle.response.content_type = "application/json"
    return json.dumps({"status": "healthy", "jobs": len(jobs)})


class NoDelayServer(WSGIServer):
    def handle(self, sock, address):
        # TCP_NODELAY: 23 -> ~5,400 req/s on one keep-alive connection (headers and
        # body are two writes; without it the second waits for the client's delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18081)
    p.add_argument("--fsync", metavar="FILE", help="write and fsync each body into FILE")
    p.add_argument("--server", choices=("pywsgi", "httptools"), default="pywsgi")
    a = p.parse_args()
    if a.fsync:
        fd = os.open(a.fsync, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        block = b"\xff" * (1 << 20)
        for _ in range(FILL >> 20):
            os.write(fd, block)
        os.fsync(fd)
        durable["fd"] = fd
    if a.server == "httptools":
        from dqorch import http_fast
        http_fast.Server((a.host, a.port), app).serve_forever()
    else:
        NoDelayServer((a.host, a.port), app, log=None).serve_forever()


if __name__ == "__main__":
    main()

"""The cost of reading a request's header fields: http.client.parse_headers (what pywsgi
uses, through the email package) against dqorch.headers.read, on the fields curl and
the Python worker send.

  python bench/headers.py [--n 20000]
"""
import argparse
import http.client
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dqorch import headers  # noqa: E402

FIELDS = (b"Host: 127.0.0.1:8081\r\nUser-Agent: python-requests/2.31.0\r\n"
          b"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n"
          b"Content-Type: application/json\r\nContent-Length: 84\r\n\r\n")


def per_call_us(read, n):
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            read(io.BytesIO(FIELDS))
        t = (time.perf_counter() - t0) / n * 1e6
        best = t if best is None else min(best, t)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    a = p.parse_args()
    old = per_call_us(http.client.parse_headers, a.n)
    new = per_call_us(headers.read, a.n)
    print(f"http.client.parse_headers: {old:.1f} µs; dqorch.headers.read: {new:.1f} µs "
          f"({old / new:.1f}x less), 7 fields, best of 5 x {a.n:,}")


if __name__ == "__main__":
    main()

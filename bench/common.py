"""Shared pieces of the bench scripts: ports, processes, wrk, and a paced HTTP client.

Nothing here imports dqorch; the harness talks to targets only over HTTP, like a client.
"""
import atexit
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CONTRACT §3's job queues, as any client knows them. dqorch/jobs.py's QUEUES is the
# definition; it is not imported here because this file imports nothing of dqorch.
JOB_QUEUES = ("job.high", "job.medium", "job.low")

# --- ports and processes -----------------------------------------------------------


def free_ports(n_tcp, n_udp=0):
    """Return n_tcp free TCP ports then n_udp free UDP ports (held open until all chosen)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n_tcp)]
    socks += [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n_udp)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def user_system(pid):
    """User and system CPU seconds used so far by process pid (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid):
    """User + system CPU seconds used so far by process pid (all its threads)."""
    return sum(user_system(pid))


def _busy_seconds():
    """CPU seconds all CPUs spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    """CPU seconds of this process plus its waited-for children (wrk runs)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class CpuMeter:
    """CPU use during one measurement: the target's, and everything else's except the
    load generator's (RabbitMQ, kernel softirq, other programs sharing the machine)."""

    def __init__(self, pid):
        self.pid = pid
        self.t0 = (time.monotonic(), _busy_seconds(), _own_seconds(), cpu_seconds(pid))

    def stop(self, requests):
        t1 = (time.monotonic(), _busy_seconds(), _own_seconds(), cpu_seconds(self.pid))
        wall, busy, own, target = (b - a for a, b in zip(self.t0, t1))
        return dict(cpu_us=target / max(requests, 1) * 1e6,
                    other_pct=max(0.0, busy - own - target) / wall * 100)


class Target:
    """A server process under test, started from an argv list, its output in log_path."""

    def __init__(self, name, argv, port, log_path, cwd=None, cpus=None):
        self.name, self.argv, self.port, self.log_path = name, argv, port, log_path
        self._log = open(log_path, "wb")
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=pre)

    def wait_ready(self, timeout_s):
        """Poll GET /api/health until 200; False on timeout or when the process exits."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}/api/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def get_json(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.load(r)

    def log_tail(self, n=40):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_node(checkout, tmp, name="node", cpus=None, **settings):
    """A dqorch.py from `checkout` on free loopback ports with a fresh data_dir under
    tmp and log_level warning; `settings` are further config keys (YAML scalars).
    Waits for GET /api/health; exits with the node's log tail if it does not start."""
    import sys
    http_port, metrics_port, raft_port = free_ports(3)
    cfg = os.path.join(tmp, f"{name}.yaml")
    keys = dict(data_dir=os.path.join(tmp, f"{name}-data"), http_port=http_port,
                metrics_port=metrics_port, raft_port=raft_port, log_level="warning")
    keys.update(settings)
    with open(cfg, "w") as f:
        f.write("".join(f"{k}: {v}\n" for k, v in keys.items()))
    node = Target(name, [sys.executable, os.path.join(checkout, "dqorch.py"), "-c", cfg],
                  http_port, os.path.join(tmp, f"{name}.log"), cwd=checkout, cpus=cpus)
    if not node.wait_ready(60):
        node.stop()
        sys.exit(f"{name} did not start:\n" + node.log_tail())
    return node


# --- wrk ---------------------------------------------------------------------------

# One wrk thread; ids are <prefix>-<n>, unique per thread state; with a batch size,
# each request is a POST /api/jobs/batch of that many jobs. With a limit, the
# script exits as soon as that many responses are in (wrk itself only knows durations).
WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  prefix = args[1]; limit = tonumber(args[2] or "0"); batch = tonumber(args[3] or "0")
  n = 0; got = 0; non2xx = 0; accepted = 0
  pad = string.rep("x", 50)
end
local function job()
  n = n + 1
  return '{"id":"' .. prefix .. '-' .. n .. '","type":"bench","priority":5,"payload":{"data":"' .. pad .. '"}}'
end
function request()
  local hdr = {["Content-Type"] = "application/json"}
  if batch == 0 then return wrk.format("POST", "/api/jobs/register", hdr, job()) end
  local items = {}
  for i = 1, batch do items[i] = job() end
  return wrk.format("POST", "/api/jobs/batch", hdr, '{"jobs":[' .. table.concat(items, ",") .. ']}')
end
function response(status, headers, body)
  got = got + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1
  elseif batch == 0 then accepted = accepted + 1
  else accepted = accepted + tonumber(string.match(body, '"accepted":%s*(%d+)') or "0") end
  if limit > 0 and got >= limit then
    io.write(string.format('WRKJSON {"requests":%d,"non2xx":%d}\n', got, non2xx))
    io.flush()
    os.exit(0)
  end
end
function done(summary, latency, requests)
  local bad, ok = 0, 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx"); ok = ok + t:get("accepted") end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"non2xx":%d,"errors":%d,"accepted":%d}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, bad,
    e.connect + e.read + e.write + e.timeout, ok))
end
"""
_lua_path = None


def run_wrk(port, conns, duration_s, prefix, limit=0, cpus=None, batch=0):
    """Run wrk (1 thread, keep-alive) against POST /api/jobs/register, or with batch
    against POST /api/jobs/batch, that many jobs a request.

    Returns a dict: rps, p50_ms, p99_ms, max_ms, non2xx, errors (socket errors and
    timeouts, 30 s), requests, accepted (jobs answered 2xx; for a batch, the items its
    answer counts accepted), elapsed_s. With limit, stops after that many responses
    and returns requests, non2xx and elapsed_s (wall clock) only.
    """
    global _lua_path
    if _lua_path is None:
        fd, _lua_path = tempfile.mkstemp(suffix=".lua", prefix="bench-wrk-")
        os.write(fd, WRK_LUA.encode())
        os.close(fd)
        atexit.register(os.remove, _lua_path)
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (Debian: apt-get install -y wrk)")
    dur = "3600s" if limit else f"{max(1, round(duration_s))}s"
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{dur}", "--timeout", "30s", "-s", _lua_path,
            f"http://127.0.0.1:{port}", "--", prefix, str(limit), str(batch)]
    if cpus:
        argv = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] + argv
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    lines = [l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")]
    if not lines:
        raise RuntimeError(f"wrk failed (exit {out.returncode}): {out.stdout}{out.stderr}")
    r = json.loads(lines[-1][8:])
    r["elapsed_s"] = elapsed
    if "duration_us" in r:
        r.update(rps=r["requests"] / (r["duration_us"] / 1e6), p50_ms=r["p50_us"] / 1e3,
                 p99_ms=r["p99_us"] / 1e3, max_ms=r["max_us"] / 1e3)
    return r


# --- paced client ------------------------------------------------------------------


def _read_response(sock, buf):
    """Read one Content-Length response; return (status, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status, length = int(lines[0].split()[1]), None
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    if length is None:
        raise ConnectionError("response without Content-Length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        rest += chunk
    return status, rest[length:]


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q / 100 * len(sorted_vals)))]


def paced(port, conns, interval_s, duration_s, prefix):
    """Open-loop load: each of conns keep-alive connections sends one register every
    interval_s, starts staggered. Latency runs from the *scheduled* send time, so a
    stalled server is charged for every request it delayed (no coordinated omission).

    Returns rate (achieved responses/s), p50_ms, p99_ms, max_ms, non2xx, errors, requests.
    """
    import gevent
    from gevent import socket as gsocket

    pad = "x" * 50
    lat, counts = [], {"non2xx": 0, "errors": 0}
    per_conn = int(duration_s / interval_s)
    t0 = time.perf_counter() + 0.1

    def connect():
        s = gsocket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def one_conn(c):
        sock, buf = connect(), b""
        for i in range(per_conn):
            sched = t0 + (c / conns + i) * interval_s
            delay = sched - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            body = ('{"id":"%s-%d-%d","type":"bench","priority":5,"payload":{"data":"%s"}}'
                    % (prefix, c, i, pad)).encode()
            req = (b"POST /api/jobs/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body))
            try:
                sock.sendall(req)
                status, buf = _read_response(sock, buf)
            except OSError:
                counts["errors"] += 1
                sock.close()
                sock, buf = connect(), b""
                continue
            lat.append(time.perf_counter() - sched)
            if not 200 <= status < 300:
                counts["non2xx"] += 1
        sock.close()

    gevent.joinall([gevent.spawn(one_conn, c) for c in range(conns)], raise_error=True)
    elapsed = time.perf_counter() - t0
    lat.sort()
    return dict(rate=len(lat) / elapsed, p50_ms=percentile(lat, 50) * 1e3,
                p99_ms=percentile(lat, 99) * 1e3, max_ms=(lat[-1] if lat else 0) * 1e3,
                requests=len(lat), **counts)


# --- memory and reports ------------------------------------------------------------


def rss_bytes(pid="self"):
    """Resident set size of a process now (from /proc/<pid>/statm)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes(pid="self"):
    """Highest resident set size the process has reached (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class OtherCpu:
    """Busy CPU used by anything but this process (and its waited-for children) since
    creation, in % of one core: the noise from other programs on the machine."""

    def __init__(self):
        self.t0 = (time.monotonic(), _busy_seconds(), _own_seconds())

    def pct(self):
        wall, busy, own = (b - a for a, b in zip(self.t0, (time.monotonic(), _busy_seconds(),
                                                             _own_seconds())))
        return max(0.0, busy - own) / wall * 100


def machine_line(root):
    """CPUs and model, RAM, Python, kernel and the checkout's commit, on one line."""
    import platform
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                         capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":(exclude)docs"],      # docs: what --write is changing
                           cwd=root, capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs ({model}), {ram:.0f} GiB RAM, Python "
            f"{platform.python_version()}, Linux {platform.release()}, commit {rev}"
            f"{' with uncommitted changes' if dirty else ''}; {versions()}")


def versions():
    """The packages and the broker the figures depend on."""
    import glob
    from importlib import metadata
    out = []
    for name in ("gevent", "bottle", "pika", "orjson", "prometheus-client"):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    broker = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*"))
    if broker:
        out.append("RabbitMQ " + broker[-1].rsplit("-", 1)[1])
    return ", ".join(out)


def job_queues(port, purge=False, host="127.0.0.1"):
    """{queue: messages} of the job queues the broker has (the node declares them; a
    missing one is left out), each emptied after it is counted when purge."""
    import pika
    conn, depth = pika.BlockingConnection(pika.ConnectionParameters(host, port)), {}
    try:
        for q in JOB_QUEUES:
            ch = conn.channel()
            try:
                depth[q] = ch.queue_declare(q, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                continue              # 404: not declared yet (the channel is closed)
            if purge:
                ch.queue_purge(q)
            ch.close()
    finally:
        conn.close()
    return depth


def replace_section(path, tag, text):
    """Replace the text between <!-- bench:TAG --> and <!-- /bench:TAG --> in path,
    appending the section (or creating the file) when the markers are missing."""
    begin, end = f"<!-- bench:{tag} -->", f"<!-- /bench:{tag} -->"
    section = f"{begin}\n{text}\n{end}"
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in old and end in old:
        new = old[:old.index(begin)] + section + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(new)


def ensure_broker(port, say):
    """Start a private RabbitMQ on 127.0.0.1:port (scripts/rabbitmq-local.sh) unless it
    runs; True when this call started it. say(message) reports progress."""
    env = dict(os.environ, RABBIT_PORT=str(port))
    script = os.path.join(_ROOT, "scripts", "rabbitmq-local.sh")
    if subprocess.run([script, "status"], env=env, capture_output=True).returncode == 0:
        say(f"private RabbitMQ already running on 127.0.0.1:{port}; left running")
        return False
    say(f"starting a private RabbitMQ on 127.0.0.1:{port}")
    out = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"could not start RabbitMQ on {port}: {out.stdout}{out.stderr}")
    return True


def stop_broker(port, say):
    subprocess.run([os.path.join(_ROOT, "scripts", "rabbitmq-local.sh"), "stop"],
                   env=dict(os.environ, RABBIT_PORT=str(port)), capture_output=True)
    say(f"stopped the private RabbitMQ on {port}")


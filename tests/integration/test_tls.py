"""TLS for real: the API over HTTPS (tls_cert_file, tls_key_file), forwarded writes
between members over HTTPS (tls_ca_file), and AMQPS to a RabbitMQ whose TLS listener
scripts/rabbitmq-local.sh sets up (rabbitmq_tls, rabbitmq_tls_ca_file,
rabbitmq_tls_server_name). Certificates come from openssl, made per module."""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

from .broker_fixtures import message_count, port_open, purge
from .cluster_fixtures import Cluster
from .conftest import REPO, wait_until, own_broker

PORT = int(os.environ.get("DQ_TEST_TLS_RABBIT_PORT", "5678"))
TLS_PORT = PORT + 1000                # scripts/rabbitmq-local.sh's AMQPS listener
rabbit = own_broker(PORT)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 signed by it, and a stranger's CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=dq {ca}",
                 "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"),
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign")
    _openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", str(d / "api.key"),
             "-out", str(d / "api.csr"))
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                           "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(d / "api.csr"), "-CA", str(d / "ca.pem"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(d / "ext"), "-out", str(d / "api.pem"))
    return d


def trusting(certs, ca: str = "ca") -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs / f"{ca}.pem"))


def https_node(make_node, certs, rabbit_port: int, **overrides):
    node = make_node(rabbit_port, start=False, tls_cert_file=str(certs / "api.pem"),
                     tls_key_file=str(certs / "api.key"), **overrides)
    node.tls = trusting(certs)
    return node.start()


# The API over HTTPS ##############################################################

def test_the_api_speaks_https_and_serves_jobs(make_node, certs, rabbit, http_server):
    node = https_node(make_node, certs, PORT, http_server=http_server)
    c = node.client()
    assert c.call("POST", "/api/jobs/register", {"id": "tls-1", "type": "t"})[0] == 202
    code, job = c.call("GET", "/api/jobs/tls-1")
    assert code == 200 and job["id"] == "tls-1"
    assert "node ready" in node.log_tail() and "https=127.0.0.1" in node.log_tail()
    with pytest.raises(ssl.SSLCertVerificationError):     # a client that trusts another CA
        ctx = trusting(certs, "other-ca")
        with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as s:
            ctx.wrap_socket(s, server_hostname="127.0.0.1")


def _metric(node, name: str) -> float:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics",
                                  timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name))


def test_plain_http_and_silent_clients_on_the_https_port_are_closed_and_counted(
        make_node, certs, rabbit, http_server):
    node = https_node(make_node, certs, PORT, http_request_timeout_s=1,
                      http_server=http_server)
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=15) as plain:
        plain.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200"), answer
    silent = [socket.create_connection(("127.0.0.1", node.http_port), timeout=15)
              for _ in range(50)]
    try:
        # The others are served meanwhile...
        assert node.client().call("GET", "/api/health")[0] == 200
        # ...and the silent ones are closed once the handshake time is up.
        for s in silent:
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in silent:
            s.close()
    wait_until(lambda: _metric(node, "distriqueue_tls_handshake_failures_total") >= 51,
               30, 0.1, "handshake failures counted")
    assert "Traceback" not in node.log_tail(400)


@pytest.mark.parametrize("setting,problem", [
    ("missing_cert", "config: tls_cert_file: cannot read"),
    ("cert_is_a_key", "config: tls_cert_file:"),
    ("wrong_key", "config: tls_key_file:"),
    ("no_key", "config: tls_key_file: must be set together with tls_cert_file"),
    ("bad_ca", "config: rabbitmq_tls_ca_file:"),
])
def test_unusable_tls_files_stop_start_up_with_one_line_naming_the_key(
        make_node, certs, tmp_path, setting, problem):
    settings = {
        "missing_cert": dict(tls_cert_file=str(tmp_path / "nope.pem"),
                             tls_key_file=str(certs / "api.key")),
        "cert_is_a_key": dict(tls_cert_file=str(certs / "api.key"),
                              tls_key_file=str(certs / "api.key")),
        "wrong_key": dict(tls_cert_file=str(certs / "api.pem"),
                          tls_key_file=str(certs / "ca.key")),
        "no_key": dict(tls_cert_file=str(certs / "api.pem")),
        "bad_ca": dict(rabbitmq_tls=True, rabbitmq_tls_ca_file=str(certs / "api.key")),
    }[setting]
    node = make_node(start=False, **settings)
    for extra in ([], ["--check-config"]):
        r = subprocess.run([sys.executable, os.path.join(REPO, "dqorch.py"), "-c",
                            str(node.cfg_path), *extra], capture_output=True, text=True,
                           timeout=60)
        lines = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
        assert r.returncode == 2, (r.returncode, lines)
        assert len(lines) == 1 and problem in lines[0], lines
        assert "PRIVATE KEY" not in lines[0]
    assert not os.path.exists(node.cfg["data_dir"])      # stopped before touching it


@pytest.mark.parametrize("form", ["pkcs8", "traditional"])
@pytest.mark.parametrize("terminal", [False, True])
def test_an_encrypted_key_stops_start_up_with_one_line_and_never_prompts(
        make_node, certs, tmp_path, form, terminal):
    # Before: OpenSSL asked "Enter PEM pass phrase:" on the controlling terminal and
    # waited (a hang under a supervisor that gives the process one); with no terminal a
    # traceback (OSError: Invalid argument) and exit 1.
    key = tmp_path / f"{form}.key"
    _openssl("pkey", "-in", str(certs / "api.key"), "-aes256", "-passout", "pass:s3cret",
             *(["-traditional"] if form == "traditional" else []), "-out", str(key))
    assert b"ENCRYPTED" in key.read_bytes()
    node = make_node(start=False, tls_cert_file=str(certs / "api.pem"),
                     tls_key_file=str(key))
    argv = [sys.executable, os.path.join(REPO, "dqorch.py"), "-c", str(node.cfg_path)]
    if not terminal:
        # A new session: no controlling terminal, stdin not a terminal either.
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60, start_new_session=True)
        code, out = r.returncode, r.stdout + r.stderr
    else:
        code, out = _run_on_a_terminal(argv)
    lines = [x for x in out.splitlines() if x.strip()]
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"config: tls_key_file: {key} is encrypted"), lines
    assert "unencrypted key" in lines[0] and "pass phrase" not in out.lower()
    assert not os.path.exists(node.cfg["data_dir"])


def _run_on_a_terminal(argv, timeout_s: float = 30.0):
    """Run argv with a pty as its stdin, stdout, stderr and controlling terminal, as
    an operator's shell would; (exit code, what it wrote), the code None when it was
    still running (waiting on the terminal) after timeout_s."""
    import fcntl
    import select
    import termios
    import time
    master, slave = os.openpty()

    def take_terminal():        # in the child: a session of its own, the pty its terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                preexec_fn=take_terminal)
    finally:
        os.close(slave)
    out, deadline = b"", time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:         # EIO: every writer closed the terminal
                    chunk = b""
                out += chunk
                if not chunk and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
        code = proc.poll()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(master)
    return code, out.decode(errors="replace")


# Forwarded writes between members over HTTPS ####################################

def test_a_follower_forwards_writes_to_the_leader_over_https(tmp_path_factory, certs,
                                                              rabbit, http_server):
    c = Cluster(tmp_path_factory, 3, rabbit_port=PORT, http_server=http_server,
                tls_cert_file=str(certs / "api.pem"), tls_key_file=str(certs / "api.key"),
                tls_ca_file=str(certs / "ca.pem"))
    for node in c.nodes.values():
        node.tls = trusting(certs)
    try:
        c.start()
        follower = c.followers()[0]
        code, body = follower.client().call("POST", "/api/jobs/register",
                                            {"id": "tls-fwd", "type": "t"})
        assert code == 202, body
        lead = c.wait_leader()
        assert lead.client().call("GET", "/api/jobs/tls-fwd")[0] == 200
    finally:
        c.stop()


# RabbitMQ over TLS ###############################################################

@pytest.fixture
def amqps(rabbit):
    """The broker's AMQPS port (scripts/rabbitmq-local.sh sets it up when it has openssl)."""
    if not port_open(TLS_PORT):
        pytest.skip(f"the test broker has no AMQPS listener on {TLS_PORT} (no openssl when "
                    "scripts/rabbitmq-local.sh started it)")
    return TLS_PORT


def test_jobs_reach_rabbitmq_over_amqps(make_node, rabbit, amqps, certs):
    ca = f"{os.environ.get('TMPDIR') or '/tmp'}/dqorch-rabbit-{PORT}/tls/ca.pem"
    purge(PORT, "job.medium")
    node = make_node(TLS_PORT, rabbitmq_tls=True, rabbitmq_tls_ca_file=ca)
    node.wait_healthy()
    assert "tls=on" in node.log_tail()
    assert node.client().call("POST", "/api/jobs/register", {"id": "amqps-1"})[0] == 202
    wait_until(lambda: message_count(PORT, "job.medium") >= 1, 30, 0.05,
               "the job in job.medium")


def test_a_broker_certificate_for_another_name_is_refused_with_one_clear_line(
        make_node, rabbit, amqps, certs):
    ca = f"{os.environ.get('TMPDIR') or '/tmp'}/dqorch-rabbit-{PORT}/tls/ca.pem"
    node = make_node(TLS_PORT, rabbitmq_tls=True, rabbitmq_tls_ca_file=ca,
                     rabbitmq_tls_server_name="rabbit.elsewhere.example")
    wait_until(lambda: "broker connect failed" in node.log_tail(), 30, 0.1,
               "a failed connect logged")
    line = next(x for x in node.log_tail().splitlines() if "broker connect failed" in x)
    assert "certificate" in line.lower() or "hostname" in line.lower(), line
    code, health = node.health()
    assert health["status"] != "healthy", health
    assert node.proc.poll() is None and "Traceback" not in node.log_tail(400)

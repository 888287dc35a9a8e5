"""TLS from the settings: the API's server context, the client context for forwarding
to peers' APIs, and pika's SSL options for RabbitMQ. Each is None when its settings
are off. A file that cannot be used raises ConfigError naming its key, so start-up
(and --check-config) stops with one line, before anything listens."""
from __future__ import annotations

import ssl

import pika

from .config import Config, ConfigError


def _read(path: str, key: str, marker: bytes, what: str) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror or e}") from None
    if marker not in data:
        raise ConfigError(key, f"{path} holds no PEM {what}")


class _Encrypted(Exception):
    """The key file asked for a passphrase."""


def _no_passphrase():
    # Called by OpenSSL only for an encrypted key. Without a password callback it
    # prompts on the controlling terminal (a hang under a supervisor) and, with no
    # terminal, fails with a bare OSError: never ask, say what is wrong instead.
    raise _Encrypted()


def server_context(cfg: Config) -> ssl.SSLContext | None:
    """HTTPS for the API port (tls_cert_file + tls_key_file); TLS 1.2 at least."""
    if not cfg.tls_cert_file:
        return None
    _read(cfg.tls_cert_file, "tls_cert_file", b"-----BEGIN CERTIFICATE-----", "certificate")
    _read(cfg.tls_key_file, "tls_key_file", b"PRIVATE KEY-----", "private key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file, password=_no_passphrase)
    except _Encrypted:
        raise ConfigError("tls_key_file", f"{cfg.tls_key_file} is encrypted (it needs a "
                          f"passphrase); dqorch needs an unencrypted key: decrypt it "
                          f"with `openssl pkey -in KEY -out KEY.plain` and keep that "
                          f"file readable only by dqorch's user") from None
    except ssl.SSLError as e:
        why = "does not match tls_cert_file" if "KEY_VALUES_MISMATCH" in str(e) else \
            f"cannot be used with tls_cert_file ({e.reason or e})"
        raise ConfigError("tls_key_file", f"{cfg.tls_key_file} {why}") from None
    return ctx


def _client_context(ca_file: str, key: str) -> ssl.SSLContext:
    if ca_file:
        _read(ca_file, key, b"-----BEGIN CERTIFICATE-----", "certificate")
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError as e:
        raise ConfigError(key, f"{ca_file} cannot be used as CA certificates "
                          f"({e.reason or e})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def peer_context(cfg: Config) -> ssl.SSLContext | None:
    """Forwarded writes go to the leader's API over HTTPS when ours is HTTPS (every
    member is set alike); its certificate must name the host of its api_advertise."""
    if not cfg.tls_cert_file:
        return None
    return _client_context(cfg.tls_ca_file, "tls_ca_file")


def rabbitmq_options(cfg: Config):
    """pika.SSLOptions for AMQPS, the broker's certificate checked against
    rabbitmq_tls_server_name (default rabbitmq_host); None when rabbitmq_tls is off."""
    if not cfg.rabbitmq_tls:
        return None
    ctx = _client_context(cfg.rabbitmq_tls_ca_file, "rabbitmq_tls_ca_file")
    return pika.SSLOptions(ctx, server_hostname=cfg.rabbitmq_tls_server_name
                           or cfg.rabbitmq_host)


def contexts(cfg: Config) -> tuple:
    """(server_context, peer_context, rabbitmq_options) of cfg: what Node takes."""
    return server_context(cfg), peer_context(cfg), rabbitmq_options(cfg)

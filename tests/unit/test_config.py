"""Unit tests for dqorch.config: defaults, DQ_* overrides, every type and range rule,
one-line errors that name the key, and secrets that never show. Pure: no os.environ
(except where load's default is the point), files only under tmp_path."""

import dataclasses
import json
from pathlib import Path

import pytest

from dqorch import config
from dqorch.config import KEYS, Config, ConfigError, load, parse

REPO = Path(__file__).resolve().parents[2]

DEFAULTS = {
    "node_name": "orchestrator@127.0.0.1",
    "cookie": "change-me",
    "data_dir": "./var/dqorch",
    "http_host": "127.0.0.1",
    "http_port": 8081,
    "metrics_port": 9101,
    "raft_port": 9105,
    "raft_peers": (),
    "rabbitmq_host": "127.0.0.1",
    "rabbitmq_port": 5672,
    "rabbitmq_username": "guest",
    "rabbitmq_password": "guest",
    "rabbitmq_vhost": "/",
    "publish_on_register": True,
    "job_max_retries": 3,
    "job_execution_timeout_s": 300,
    "worker_heartbeat_timeout_s": 30.0,
    "job_retry_backoff_s": 0.0,
    "job_retention_s": 86400,
    "job_retention_max": 1000000,
    "max_body_bytes": 1048576,
    "max_job_bytes": 60000,
    "log_level": "info",
    "log_format": "text",
    "publish_window": 1000,
    "snapshot_entries": 100000,
    "allowed_origins": (),
    "allowed_hosts": (),
    "http_request_timeout_s": 30.0,
    "http_idle_timeout_s": 75.0,
    "http_server": "httptools",
    "max_list_bytes": 4194304,
    "api_tokens": (),
    "api_read_tokens": (),
    "allow_from": (),
    "max_batch_jobs": 1000,
    "max_batch_body_bytes": 16777216,
    "max_pending_proposals": 5000,
    "rabbitmq_heartbeat_s": 10,
    "raft_heartbeat_ms": 100,
    "raft_election_timeout_ms": 1000,
    "witness": False,
    "leader_broker_handover_s": 10.0,
    "max_clock_skew_s": 5.0,
    "metrics_job_types": 20,
    "api_advertise": "",
    "tls_cert_file": "",
    "tls_key_file": "",
    "tls_ca_file": "",
    "rabbitmq_tls": False,
    "rabbitmq_tls_ca_file": "",
    "rabbitmq_tls_server_name": "",
}

# key -> (DQ_<KEY> value, the value it must become); one valid override per key.
ENV_CASES = {
    "node_name": ("orch-2@10.0.0.2", "orch-2@10.0.0.2"),
    "cookie": ("s3cret", "s3cret"),
    "data_dir": ("/var/lib/dqorch", "/var/lib/dqorch"),
    "http_host": ("0.0.0.0", "0.0.0.0"),
    "http_port": ("18081", 18081),
    "metrics_port": ("19101", 19101),
    "raft_port": ("19105", 19105),
    "raft_peers": ("a@h1,b@h2:9106", ("a@h1", "b@h2:9106")),
    "rabbitmq_host": ("rabbit.internal", "rabbit.internal"),
    "rabbitmq_port": ("5673", 5673),
    "rabbitmq_username": ("dq", "dq"),
    "rabbitmq_password": ("pw with spaces", "pw with spaces"),
    "rabbitmq_vhost": ("dq", "dq"),
    "publish_on_register": ("false", False),
    "job_max_retries": ("0", 0),
    "job_execution_timeout_s": ("604800", 604800),
    "worker_heartbeat_timeout_s": ("2.5", 2.5),
    "job_retry_backoff_s": ("0.5", 0.5),
    "job_retention_s": ("3600", 3600),
    "job_retention_max": ("5000", 5000),
    "max_body_bytes": ("2097152", 2097152),
    "max_job_bytes": ("1024", 1024),
    "log_level": ("DEBUG", "debug"),
    "log_format": ("json", "json"),
    "publish_window": ("1", 1),
    "snapshot_entries": ("1000", 1000),
    "allowed_origins": ("https://Console.example:8443, http://10.0.0.9",
                        ("https://console.example:8443", "http://10.0.0.9")),
    "allowed_hosts": ("Orch.Example., [::1],10.0.0.5", ("orch.example", "::1", "10.0.0.5")),
    "http_request_timeout_s": ("5", 5.0),
    "http_idle_timeout_s": ("1.5", 1.5),
    "http_server": ("PyWSGI", "pywsgi"),
    "max_list_bytes": ("65536", 65536),
    "api_tokens": ("tok-aaaaaaaaaaaaaaaa,tok-bbbbbbbbbbbbbbbb",
                   ("tok-aaaaaaaaaaaaaaaa", "tok-bbbbbbbbbbbbbbbb")),
    "api_read_tokens": ("ro-cccccccccccccccc", ("ro-cccccccccccccccc",)),
    "allow_from": ("10.0.0.0/8, 192.168.1.7,::1", ("10.0.0.0/8", "192.168.1.7/32", "::1/128")),
    "max_batch_jobs": ("50", 50),
    "max_batch_body_bytes": ("2048", 2048),
    "max_pending_proposals": ("100", 100),
    "rabbitmq_heartbeat_s": ("30", 30),
    "raft_heartbeat_ms": ("50", 50),
    "raft_election_timeout_ms": ("2000", 2000),
    "witness": ("true", True),
    "leader_broker_handover_s": ("2.5", 2.5),
    "max_clock_skew_s": ("0.5", 0.5),
    "metrics_job_types": ("5", 5),
    "api_advertise": ("10.0.0.5:18081", "10.0.0.5:18081"),
    "tls_cert_file": ("/etc/dq/api.pem", "/etc/dq/api.pem"),
    "tls_key_file": ("/etc/dq/api.key", "/etc/dq/api.key"),
    "tls_ca_file": ("/etc/dq/ca.pem", "/etc/dq/ca.pem"),
    "rabbitmq_tls": ("yes", True),
    "rabbitmq_tls_ca_file": ("/etc/dq/rabbit-ca.pem", "/etc/dq/rabbit-ca.pem"),
    "rabbitmq_tls_server_name": ("rabbit.internal", "rabbit.internal"),
}

# key -> values that YAML can produce and that must be refused, each for its type or range.
BAD_FILE_VALUES = {
    "node_name": ["orchestrator", "@host", "name@", "a b@host", "a@b@c", "n@h:9105", 5, None, []],
    "cookie": ["", None, ["x"], {"a": 1}, True],
    "data_dir": ["", None, [], "a\x00b"],
    "http_host": ["", "a host", None],
    "http_port": [0, 65536, -1, "8081", 8081.0, True, None, [8081]],
    "metrics_port": [0, 70000, "x"],
    "raft_port": [0, 65536, 1.5],
    "raft_peers": ["a@", ["a@h", 5], ["a@h:0"], ["a@h:65536"], ["a@h", "a@h:9200"], [""], None, 5,
                   {"a": "h"}],
    "rabbitmq_host": ["", None, "two words"],
    "rabbitmq_port": [0, 65536, "5672"],
    "rabbitmq_username": ["", None, []],
    "rabbitmq_password": ["", None, {"p": 1}, False],
    "rabbitmq_vhost": ["", None],
    "publish_on_register": ["yes", 1, None, "true"],
    "job_max_retries": [-1, 101, 3.0, False],
    "job_execution_timeout_s": [0, 604801, 300.5],
    "worker_heartbeat_timeout_s": [0, -1, 86401, "30", True, float("nan"), float("inf"), None],
    "job_retry_backoff_s": [-1, 86401, "1", True, float("nan"), None],
    "job_retention_s": [0, -5, 1.5, "60", True, None],
    "job_retention_max": [0, -1, 2.0, "9", True, None],
    "max_body_bytes": [1023, 67108865, 1e6],
    "max_job_bytes": [1023, 67108865, 2000000],  # 2000000 > the default max_body_bytes
    "log_level": ["verbose", "", 3, None],
    "log_format": ["xml", None],
    "publish_window": [0, 100001],
    "snapshot_entries": [999, 100000001],
    "allowed_origins": ["https://a.example/path", ["*"], ["ftp://x"], [5], 5, None],
    "allowed_hosts": [["orch.example:8081"], ["http://orch.example"], ["a b"], [5], 5, None,
                      ["*", "orch.example"], ["[::1]:80"]],
    "http_request_timeout_s": [0, -1, 3601, "30", None],
    "http_idle_timeout_s": [0, 86401, True],
    "http_server": ["uvicorn", "", None, 1, ["pywsgi"]],
    "max_list_bytes": [65535, 1073741825, 1.5],
    "api_tokens": [["short"], ["has space in it okay"], [5], 5, None],
    "api_read_tokens": [["tooshort"]],
    "allow_from": [["10.0.0.0/33"], ["not-an-address"], [5], 5, None],
    "max_batch_jobs": [0, 100001, "5"],
    "max_batch_body_bytes": [1023, 1073741825],
    "max_pending_proposals": [0, 9, 1000001, 1.5, "100"],
    "rabbitmq_heartbeat_s": [0, 601, 1.5, "10"],
    "raft_heartbeat_ms": [9, 10001, 1.5, "100"],
    "raft_election_timeout_ms": [99, 60001, 299, "1000"],
    "witness": ["yes", 1, None],
    "leader_broker_handover_s": [-1, 3601, "10", None],
    "max_clock_skew_s": [0, -1, 86401, "5"],
    "metrics_job_types": [-1, 1001, 2.5, "5"],
    "api_advertise": ["10.0.0.5", "h:0", "h:65536", "a b:80", 8081, None, []],
    "tls_cert_file": [None, [], "a\x00b"],
    "tls_key_file": [None, ["k"]],
    "tls_ca_file": [None, {}],
    "rabbitmq_tls": ["yes", 1, None],
    "rabbitmq_tls_ca_file": [None, []],
    "rabbitmq_tls_server_name": ["two words", None],
}

# key -> DQ_<KEY> strings that must be refused.
BAD_ENV_VALUES = {
    "node_name": ["", "x", "a@"],
    "cookie": [""],
    "data_dir": [""],
    "http_host": ["", " "],
    "http_port": ["", "abc", "0", "65536", "80.0", "1e3", "9" * 5000],
    "metrics_port": ["-5"],
    "raft_port": ["x"],
    "raft_peers": ["a@h1,b", "a@h:99999", "a@h,a@h"],
    "rabbitmq_host": [""],
    "rabbitmq_port": ["0"],
    "rabbitmq_username": [""],
    "rabbitmq_password": [""],
    "rabbitmq_vhost": [""],
    "publish_on_register": ["", "maybe", "2"],
    "job_max_retries": ["101", "three"],
    "job_execution_timeout_s": ["0"],
    "worker_heartbeat_timeout_s": ["0", "nan", "inf", "-3", "86400.5", "1" * 5000],
    "job_retry_backoff_s": ["-0.5", "nan", "x", "86401"],
    "job_retention_s": ["0", "1.5", "x", "-1"],
    "job_retention_max": ["0", "x", "-2", "1e3"],
    "max_body_bytes": ["1000"],
    "max_job_bytes": ["2000000"],
    "log_level": ["trace"],
    "log_format": ["yaml"],
    "publish_window": ["0"],
    "snapshot_entries": ["10"],
    "allowed_origins": ["evil.example", "https://a.example/x"],
    "allowed_hosts": ["orch.example:8081", "*,x"],
    "http_request_timeout_s": ["0", "x"],
    "http_idle_timeout_s": ["-1"],
    "http_server": ["", "h11", "pywsgi,httptools"],
    "max_list_bytes": ["1024"],
    "api_tokens": ["short"],
    "api_read_tokens": ["x y"],
    "allow_from": ["10.0.0.0/99"],
    "max_batch_jobs": ["0"],
    "max_batch_body_bytes": ["10"],
    "max_pending_proposals": ["5"],
    "rabbitmq_heartbeat_s": ["0", "tcp://10.0.0.1:5672"],
    "raft_heartbeat_ms": ["0", "x"],
    "raft_election_timeout_ms": ["10", "1e3"],
    "witness": ["maybe", "2"],
    "leader_broker_handover_s": ["-1", "soon"],
    "max_clock_skew_s": ["0", "late"],
    "metrics_job_types": ["-1", "many"],
    "api_advertise": ["nohost", ":80", "h:x"],
    "rabbitmq_tls": ["maybe"],
    "rabbitmq_tls_server_name": ["a b"],
    # Any text from the environment is a path ("" means not set); a file that is not
    # there or not PEM is refused at start-up (tests/integration/test_tls.py).
    "tls_cert_file": [],
    "tls_key_file": [],
    "tls_ca_file": [],
    "rabbitmq_tls_ca_file": [],
}


def error_of(raw, env=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(raw, env or {})
    return info.value


def assert_one_line_naming(err: ConfigError, key: str) -> None:
    text = str(err)
    assert err.key == key
    assert text.startswith(f"config: {key}: ")
    assert "\n" not in text and "\r" not in text
    assert len(text) > len(f"config: {key}: ")


# Defaults ###################################################################

def test_defaults_when_file_and_env_are_empty():
    assert dataclasses.asdict(parse(None, {})) == dict(DEFAULTS)
    assert parse({}, {}) == Config()
    assert dataclasses.asdict(Config()) == dict(DEFAULTS)


def test_field_list_is_the_documented_one_in_order():
    assert list(KEYS) == list(DEFAULTS)
    assert [f.name for f in dataclasses.fields(Config)] == list(DEFAULTS)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().http_port = 1  # type: ignore[misc]


def test_node_id_and_node_host_split_node_name():
    cfg = parse({"node_name": "orch-1@10.2.1.11"}, {})
    assert (cfg.node_id, cfg.node_host) == ("orch-1", "10.2.1.11")


# The environment ############################################################

def test_env_cases_cover_every_key():
    assert set(ENV_CASES) == set(KEYS) == set(BAD_FILE_VALUES) == set(BAD_ENV_VALUES)


@pytest.mark.parametrize("key", list(ENV_CASES))
def test_env_overrides_the_file_for_every_key(key):
    text, expected = ENV_CASES[key]
    file_value = DEFAULTS[key] if key != "raft_peers" else ["z@h9"]
    # The certificate and its key are set together or not at all.
    pair = {"tls_cert_file": "tls_key_file", "tls_key_file": "tls_cert_file"}.get(key)
    raw = {key: file_value, **({pair: "/pair.pem"} if pair else {})}
    cfg = parse(raw, {"DQ_" + key.upper(): text})
    assert getattr(cfg, key) == expected
    assert getattr(cfg, key) != DEFAULTS[key]
    others = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in (key, pair)}
    assert others == {k: v for k, v in DEFAULTS.items() if k not in (key, pair)}


def test_env_name_is_case_insensitive_after_the_prefix():
    assert parse({}, {"DQ_Http_Port": "9000"}).http_port == 9000


def test_env_without_the_prefix_is_ignored():
    assert parse({}, {"HTTP_PORT": "1", "dq_http_port": "1", "PATH": "/bin"}) == Config()


def test_env_bool_words_any_case():
    for word in ["true", "TRUE", "yes", "On", "1"]:
        assert parse({}, {"DQ_PUBLISH_ON_REGISTER": word}).publish_on_register is True
    for word in ["false", "No", "OFF", "0"]:
        assert parse({"publish_on_register": True},
                     {"DQ_PUBLISH_ON_REGISTER": word}).publish_on_register is False


def test_env_integer_may_have_surrounding_spaces():
    assert parse({}, {"DQ_HTTP_PORT": " 9000 "}).http_port == 9000


def test_env_empty_raft_peers_means_none_even_over_the_file():
    assert parse({"raft_peers": ["a@h"]}, {"DQ_RAFT_PEERS": ""}).raft_peers == ()


def test_env_raft_peers_are_trimmed_and_blank_items_skipped():
    cfg = parse({}, {"DQ_RAFT_PEERS": " a@h1 , b@h2:9200,"})
    assert cfg.raft_peers == ("a@h1", "b@h2:9200")


def test_parse_does_not_read_os_environ(monkeypatch):
    monkeypatch.setenv("DQ_HTTP_PORT", "1")
    monkeypatch.setenv("DQ_NO_SUCH_KEY", "1")
    assert parse({}, {}) == Config()


def test_test_tooling_variable_is_not_a_setting():
    assert parse({}, {"DQ_SIM_SEEDS": "5000"}) == Config()


def test_the_tools_variables_are_not_settings_and_get_no_warning():
    # An operator who exports dqctl's DQ_URL/DQ_TOKEN, or build-orchestrator.sh's
    # DQ_CONFIG, and starts a node from that shell gets no warning about them.
    env = {"DQ_URL": "http://10.0.0.1:8081", "DQ_TOKEN": "t" * 20, "DQ_CONFIG": "c.yaml",
           "DQ_VENV": "/opt/venv", "DQ_TEST_RABBIT_PORT": "5680"}
    assert parse({}, env) == Config()
    assert config.unknown_env(env) == [] and config.unknown_env_warning(env) is None


# Values from the file #######################################################

def test_yaml_values_of_the_right_types_are_taken():
    cfg = parse({
        "raft_peers": ["orchestrator@10.2.1.12", "b@h:9200"],
        "worker_heartbeat_timeout_s": 12,
        "rabbitmq_password": 1234,
        "cookie": 3.5,
        "log_level": "WARNING",
        "log_format": "JSON",
        "publish_on_register": False,
        "max_body_bytes": 2048,
        "max_job_bytes": 2048,
    }, {})
    assert cfg.raft_peers == ("orchestrator@10.2.1.12", "b@h:9200")
    assert cfg.worker_heartbeat_timeout_s == 12.0
    assert isinstance(cfg.worker_heartbeat_timeout_s, float)
    assert cfg.rabbitmq_password == "1234" and cfg.cookie == "3.5"
    assert (cfg.log_level, cfg.log_format) == ("warning", "json")
    assert cfg.publish_on_register is False
    assert cfg.max_job_bytes == cfg.max_body_bytes == 2048


def test_yaml_raft_peers_may_be_one_comma_separated_string():
    assert parse({"raft_peers": "a@h1,b@h2"}, {}).raft_peers == ("a@h1", "b@h2")


def test_heartbeat_timeout_accepts_fractions_and_the_upper_bound():
    assert parse({"worker_heartbeat_timeout_s": 0.25}, {}).worker_heartbeat_timeout_s == 0.25
    assert parse({"worker_heartbeat_timeout_s": 86400}, {}).worker_heartbeat_timeout_s == 86400.0


# Errors #####################################################################

@pytest.mark.parametrize("key,value", [(k, v) for k, vs in BAD_FILE_VALUES.items() for v in vs])
def test_bad_value_in_file_names_its_key(key, value):
    assert_one_line_naming(error_of({key: value}), key)


@pytest.mark.parametrize("key,value", [(k, v) for k, vs in BAD_ENV_VALUES.items() for v in vs])
def test_bad_value_in_env_names_its_key_and_variable(key, value):
    err = error_of({}, {"DQ_" + key.upper(): value})
    assert_one_line_naming(err, key)
    assert f"(from DQ_{key.upper()})" in str(err)


def test_tls_cert_and_key_go_together():
    assert_one_line_naming(error_of({"tls_cert_file": "/c.pem"}, {}), "tls_key_file")
    assert_one_line_naming(error_of({}, {"DQ_TLS_KEY_FILE": "/k.pem"}), "tls_cert_file")
    cfg = parse({"tls_cert_file": "/c.pem", "tls_key_file": "/k.pem", "tls_ca_file": " "}, {})
    assert (cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_ca_file) == ("/c.pem", "/k.pem", "")


def test_error_message_shows_the_expected_range_and_the_value():
    assert str(error_of({}, {"DQ_HTTP_PORT": "abc"})) == (
        "config: http_port: must be an integer 1-65535, got 'abc' (from DQ_HTTP_PORT)")
    assert str(error_of({"http_port": 0})) == "config: http_port: must be an integer 1-65535, got 0"
    assert str(error_of({"job_max_retries": True})) == (
        "config: job_max_retries: must be an integer 0-100, got true")


def test_quoted_number_in_yaml_gets_a_hint():
    assert "remove the quotes" in str(error_of({"http_port": "8081"}))


def test_long_bad_value_is_shortened():
    err = error_of({"log_level": "x" * 500})
    assert "x" * 57 in str(err) and "x" * 58 not in str(err)


def test_max_job_bytes_may_not_exceed_max_body_bytes():
    err = error_of({"max_body_bytes": 4096, "max_job_bytes": 8192})
    assert_one_line_naming(err, "max_job_bytes")
    assert "1024-4096" in str(err)
    assert parse({"max_body_bytes": 4096, "max_job_bytes": 4096}, {}).max_job_bytes == 4096


def test_metrics_port_must_differ_from_http_port():
    assert_one_line_naming(error_of({"metrics_port": 8081}), "metrics_port")


def test_only_the_winning_value_is_checked():
    # The environment replaces the file's value before anything is checked.
    assert parse({"http_port": "oops"}, {"DQ_HTTP_PORT": "8082"}).http_port == 8082


def test_top_level_must_be_a_mapping():
    for raw in (["a"], "text", 5):
        assert_one_line_naming(error_of(raw), "<file>")


def test_unknown_key_in_file_is_named():
    err = error_of({"http_prot": 8081})
    assert_one_line_naming(err, "http_prot")
    assert "unknown key" in str(err) and "did you mean http_port" in str(err)


def test_unknown_non_string_key_in_file_is_named():
    assert_one_line_naming(error_of({True: 1}), "True")


def test_unknown_key_with_line_breaks_still_gives_one_line():
    for key in ("a\nb", "a\u2028b", "a\rb\n"):
        err = error_of({key: 1})
        assert len(str(err).splitlines()) == 1 and str(err).startswith("config: a b: ")


# DQ_* variables that are not settings, Kubernetes service links ##############

# What Kubernetes puts into every pod of the namespace for a Service named "dq" with one
# port named "http" (unless the pod has enableServiceLinks: false).
SERVICE_DQ = {
    "DQ_SERVICE_HOST": "10.96.0.12",
    "DQ_SERVICE_PORT": "8081",
    "DQ_SERVICE_PORT_HTTP": "8081",
    "DQ_PORT": "tcp://10.96.0.12:8081",
    "DQ_PORT_8081_TCP": "tcp://10.96.0.12:8081",
    "DQ_PORT_8081_TCP_PROTO": "tcp",
    "DQ_PORT_8081_TCP_PORT": "8081",
    "DQ_PORT_8081_TCP_ADDR": "10.96.0.12",
}


def test_unknown_env_variables_are_ignored_by_parse():
    # They stopped start-up before (exit 2), which made a pod next to a Service named
    # dq or dq-<anything> unstartable.
    env = dict(SERVICE_DQ, DQ_RABBIT_HOST="x", DQ_="x", DQ_HTTP_PORT="9000")
    assert parse({}, env) == Config(http_port=9000)


def test_unknown_env_lists_them_with_a_hint_for_misspellings():
    assert config.unknown_env({"DQ_RABBIT_HOST": "x", "DQ_": "x", "DQ_HTTP_PORT": "1",
                               "DQ_SIM_SEEDS": "5", "HOME": "/root"}) == [
        "DQ_", "DQ_RABBIT_HOST (did you mean DQ_RABBITMQ_HOST?)"]
    assert config.unknown_env({}) == [] and config.unknown_env({"DQ_HTTP_PORT": "1"}) == []


def test_service_links_get_no_misleading_hint():
    # DQ_PORT is close to DQ_RAFT_PORT, but it is the Service "dq", not a typo.
    assert config.unknown_env(SERVICE_DQ) == sorted(SERVICE_DQ)
    # A bare <SVC>_PORT is a link only with a tcp://host:port value.
    assert config.unknown_env({"DQ_METRIC_PORT": "9101"}) == [
        "DQ_METRIC_PORT (did you mean DQ_METRICS_PORT?)"]
    assert config.unknown_env({"DQ_METRIC_PORT": "tcp://10.1.2.3:9101"}) == ["DQ_METRIC_PORT"]


def test_unknown_env_warning_is_one_line_naming_them_and_the_fix():
    assert config.unknown_env_warning({}) is None
    assert config.unknown_env_warning({"DQ_HTTP_PORT": "1", "DQ_SIM_SEEDS": "1"}) is None
    line = config.unknown_env_warning(dict(SERVICE_DQ, DQ_RABBIT_HOST="x"))
    assert "\n" not in line
    assert line.startswith("ignoring 9 DQ_* environment variables that are not settings: "
                           "DQ_RABBIT_HOST (did you mean DQ_RABBITMQ_HOST?); ")
    assert all(name in line for name in SERVICE_DQ)
    assert "Kubernetes service links" in line and "enableServiceLinks: false" in line
    assert config.unknown_env_warning({"DQ_X": "1"}) == (
        "ignoring 1 DQ_* environment variable that is not a setting: DQ_X")


def test_unknown_env_warning_is_bounded():
    env = {f"DQ_SVC{i:02d}_SERVICE_HOST": "10.0.0.1" for i in range(50)}
    line = config.unknown_env_warning(env)
    assert "and 30 more" in line and "DQ_SVC19_" in line and "DQ_SVC20_" not in line


def test_service_link_overriding_a_setting_says_where_it_came_from():
    # A Service named dq-rabbitmq injects DQ_RABBITMQ_PORT, and it is a setting.
    err = error_of({}, {"DQ_RABBITMQ_PORT": "tcp://10.96.3.4:5672"})
    assert_one_line_naming(err, "rabbitmq_port")
    assert str(err) == (
        "config: rabbitmq_port: must be an integer 1-65535, got 'tcp://10.96.3.4:5672' "
        "(from DQ_RABBITMQ_PORT); this looks like a Kubernetes service link (for a Service "
        "named dq-rabbitmq): set enableServiceLinks: false on the pod")
    err = error_of({}, {"DQ_HTTP_PORT": "tcp://10.96.3.5:8081"})
    assert "(from DQ_HTTP_PORT)" in str(err) and "named dq-http)" in str(err)
    # Any other bad value gets no such hint.
    assert "Kubernetes" not in str(error_of({}, {"DQ_RABBITMQ_PORT": "5672x"}))


def test_unknown_key_is_reported_before_bad_values():
    assert error_of({"http_port": "bad", "nope": 1}).key == "nope"


# raft_peers #################################################################

def test_this_node_is_dropped_from_raft_peers():
    cfg = parse({"node_name": "a@h1", "raft_peers": ["a@h1", "b@h2", "c@h3:9105"]}, {})
    assert cfg.raft_peers == ("b@h2", "c@h3:9105")
    assert parse({"node_name": "a@h1", "raft_port": 9200},
                 {"DQ_RAFT_PEERS": "a@h1:9200,b@h2"}).raft_peers == ("b@h2",)


def test_this_node_with_another_port_in_raft_peers_is_an_error():
    err = error_of({"node_name": "a@h1", "raft_peers": ["a@h1:9999"]})
    assert_one_line_naming(err, "raft_peers")


def test_same_peer_twice_is_an_error_even_with_different_ports():
    err = error_of({"raft_peers": ["b@h2", "b@h2:9200"]})
    assert_one_line_naming(err, "raft_peers")
    assert "b@h2 twice" in str(err)


def test_peer_endpoints_default_to_our_raft_port():
    cfg = parse({"raft_port": 9300, "raft_peers": ["b@h2", "c@h3:9400"]}, {})
    assert cfg.peer_endpoints == (("b@h2", "h2", 9300), ("c@h3", "h3", 9400))


# Secrets ####################################################################

SECRET = "hunter2-Very-Secret"


@pytest.mark.parametrize("key", sorted(config.SECRETS))
def test_secret_values_never_appear_in_errors(key):
    # Errors of the secret's own key: the value is described, never shown.
    for bad in (["x", SECRET], {SECRET: 1}, "", None):
        assert SECRET not in str(error_of({key: bad}))
    # Other errors while the secret is set, from the file or the environment.
    env_var = "DQ_" + key.upper()
    assert SECRET not in str(error_of({key: SECRET, "http_port": 0}))
    assert SECRET not in str(error_of({}, {env_var: SECRET, "DQ_HTTP_PORT": "x"}))
    # A misspelt secret key is unknown; its value is not quoted either.
    assert SECRET not in str(error_of({key + "x": SECRET}))
    assert SECRET not in " ".join(config.unknown_env({env_var + "X": SECRET}))
    assert SECRET not in config.unknown_env_warning({env_var + "X": SECRET})
    # A secret that looks like a service link is not described either.
    link = "tcp://" + SECRET + ":1"
    assert link not in str(error_of({}, {env_var: link, "DQ_HTTP_PORT": "x"}))


def test_secret_of_wrong_type_is_described_not_shown():
    assert str(error_of({"cookie": True})) == (
        "config: cookie: must be a non-empty string, got a boolean")
    assert str(error_of({"rabbitmq_password": [SECRET]})) == (
        "config: rabbitmq_password: must be a non-empty string, got a list")
    assert str(error_of({}, {"DQ_COOKIE": ""})) == (
        "config: cookie: must be a non-empty string, got an empty string (from DQ_COOKIE)")


def test_masked_hides_secrets_and_is_json_safe():
    cfg = parse({"cookie": SECRET, "rabbitmq_password": SECRET + "2",
                 "raft_peers": ["b@h2"]}, {})
    masked = cfg.masked()
    assert masked["cookie"] == masked["rabbitmq_password"] == "***"
    assert masked["raft_peers"] == ["b@h2"]
    assert set(masked) == set(KEYS)
    text = json.dumps(masked)
    assert SECRET not in text
    assert json.loads(text)["http_port"] == 8081


def test_repr_leaves_secrets_out():
    cfg = parse({"cookie": SECRET, "rabbitmq_password": SECRET}, {})
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)
    assert cfg.cookie == SECRET  # still there for the code that needs it


# Files ######################################################################

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_config_yaml_loads_and_equals_the_defaults():
    assert load(REPO / "config.yaml", {}) == Config()


def test_repository_config_yaml_lists_every_key():
    import yaml
    raw = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    assert list(raw) == list(KEYS)


def test_missing_file_is_one_line_naming_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert_one_line_naming(info.value, str(path))
    assert "No such file" in str(info.value)


def test_yaml_syntax_error_is_one_line_with_position_and_no_content(tmp_path):
    path = write(tmp_path, f"http_port: 8081\ncookie: \"{SECRET}\n")
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert_one_line_naming(info.value, str(path))
    assert "invalid YAML" in str(info.value) and "line" in str(info.value)
    assert SECRET not in str(info.value)

    path = write(tmp_path, f"cookie: {SECRET}\n  bad: indent: here\n")
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert_one_line_naming(info.value, str(path))
    assert SECRET not in str(info.value)


def test_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"http_port: \xff\xfe\x00\n")
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert_one_line_naming(info.value, str(path))


def test_empty_file_gives_the_defaults(tmp_path):
    assert load(write(tmp_path, ""), {}) == Config()
    assert load(write(tmp_path, "# only a comment\n"), {}) == Config()


def test_file_top_level_list_names_the_path(tmp_path):
    path = write(tmp_path, "- http_port: 8081\n")
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert_one_line_naming(info.value, str(path))


def test_key_written_twice_is_an_error(tmp_path):
    path = write(tmp_path, f"cookie: a\nhttp_port: 1\ncookie: {SECRET}\n")
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert_one_line_naming(info.value, "cookie")
    assert "lines 1 and 3" in str(info.value)
    assert SECRET not in str(info.value)


def test_text_settings_keep_plain_scalars_as_written(tmp_path):
    # YAML 1.1 would make these 83, 1000 and true.
    path = write(tmp_path, "rabbitmq_password: 0123\ncookie: 1_000\nrabbitmq_username: yes\n"
                           "data_dir: 2024\n")
    cfg = load(path, {})
    assert (cfg.rabbitmq_password, cfg.cookie, cfg.rabbitmq_username, cfg.data_dir) == (
        "0123", "1_000", "yes", "2024")


def test_numbers_in_file_are_still_typed_for_numeric_keys(tmp_path):
    cfg = load(write(tmp_path, "http_port: 9000\nworker_heartbeat_timeout_s: 7.5\n"
                               "publish_on_register: no\n"), {})
    assert (cfg.http_port, cfg.worker_heartbeat_timeout_s, cfg.publish_on_register) == (
        9000, 7.5, False)


def test_bad_value_in_file_names_the_key_not_the_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "http_port: \"8081\"\n"), {})
    assert_one_line_naming(info.value, "http_port")


def test_load_reads_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DQ_HTTP_PORT", "9555")
    assert load(write(tmp_path, "http_port: 8081\n")).http_port == 9555


def test_load_with_explicit_env_ignores_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("DQ_HTTP_PORT", "9555")
    assert load(write(tmp_path, "http_port: 8081\n"), {}).http_port == 8081


def test_an_election_timeout_too_close_to_the_heartbeat_is_refused():
    e = error_of({"raft_heartbeat_ms": 400})
    assert e.key == "raft_election_timeout_ms" and "1200" in str(e), e
    assert parse({"raft_heartbeat_ms": 400, "raft_election_timeout_ms": 1200}, {})


def test_a_cluster_refuses_bodies_too_large_to_replicate():
    e = error_of({"raft_peers": ["b@h2"], "max_body_bytes": 32 << 20})
    assert e.key == "max_body_bytes" and str(16 << 20) in str(e), e
    assert parse({"max_body_bytes": 32 << 20}, {}).max_body_bytes == 32 << 20   # alone: fine

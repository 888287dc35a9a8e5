"""The cluster a data_dir belongs to, recorded in it (members.json), checked against
the config at start-up: the guard of a base configuration (raft/membership.py), the
one raft_peers give while the log holds none. Once a configuration entry is applied,
the log is the record (members.json says "in_log") and raft_peers only say whom to
find the cluster through."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid

from . import config
from .errors import EXIT_CONFIG, EXIT_DATA, StartupError
from .raft.log import write_atomic

log = logging.getLogger(__name__)


def check_members(cfg: config.Config, membership: str = "") -> config.Config:
    """The cluster this data_dir belongs to is recorded in it (members.json). A node
    whose raft_peers name another cluster would vote with a log from a different
    history: refused, unless the operator says so on purpose (docs/CLUSTER.md):
    membership "force-new-cluster" starts this node alone from its data (a majority is
    lost for good), "accept" records the configured members (every member stopped and
    reconfigured). A cluster of one may grow: new members start with empty data_dirs.
    Returns cfg, without peers under force-new-cluster."""
    path = os.path.join(cfg.data_dir, "members.json")
    if membership == "force-new-cluster":
        log.warning("forcing a new cluster of one from this node's data: raft_peers "
                    "ignored, every entry in its log taken as committed")
        cfg = dataclasses.replace(cfg, raft_peers=())
    want = sorted([cfg.node_name] + [name for name, _, _ in cfg.peer_endpoints])
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        have = doc["members"]
    except FileNotFoundError:
        have = doc = None
    except (ValueError, KeyError, TypeError) as e:
        raise StartupError(EXIT_DATA, f"{path} is damaged ({e}); start with --accept-members "
                           f"to record the configured members")
    if doc is not None and doc.get("in_log") and membership != "force-new-cluster":
        return cfg
    if have is not None and have != want and have != [cfg.node_name] and not membership:
        raise StartupError(EXIT_CONFIG, f"config: raft_peers: data_dir {cfg.data_dir} belongs to a "
                           f"cluster of {have}, the config says {want}; see docs/CLUSTER.md "
                           f"(--accept-members, --force-new-cluster)")
    if have != want:
        write_atomic(path, json.dumps({"members": want}).encode())
        if have is not None:
            log.warning("cluster members changed from=%s to=%s", have, want)
    return cfg


def member_id(data_dir: str) -> str:
    """This data_dir's member id (raft/membership.py Rule 2), made the first time a
    node starts on it and kept in identity.json: an emptied data_dir is a new member,
    never the one it replaced. OSError: data_dir cannot be written (exit 3)."""
    path = os.path.join(data_dir, "identity.json")
    try:
        with open(path, "rb") as f:
            got = json.loads(f.read())["member_id"]
        if isinstance(got, str) and got:
            return got
        raise ValueError("empty")
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError) as e:
        raise StartupError(EXIT_DATA, f"{path} is damaged ({e}); it names this member "
                           f"in the cluster: see docs/CLUSTER.md, Replacing a member")
    new = uuid.uuid4().hex[:16]
    write_atomic(path, json.dumps({"member_id": new}).encode())
    log.info("member id made member_id=%s data_dir=%s", new, data_dir)
    return new


BACKUP_FILES = ("log-", "snapshot-", "hardstate.json")


def restore_backup(src: str, data_dir: str) -> None:
    """Copy a backup of a data_dir into data_dir, which must be empty: the log, the
    snapshots and hard state, never the member id or members.json. The caller then
    starts it as a new cluster of one (--force-new-cluster): a copy cannot prove it
    is not stale, so it must never vote as the member it was (issue 27).
    StartupError naming the problem."""
    try:
        names = sorted(os.listdir(src))
    except OSError as e:
        raise StartupError(EXIT_CONFIG, f"--restore-from {src}: {e.strerror or e}")
    files = [n for n in names if n.startswith(BACKUP_FILES) and not n.endswith(".tmp")]
    if not any(n.startswith(("log-", "snapshot-")) for n in files):
        raise StartupError(EXIT_CONFIG, f"--restore-from {src}: no log-*.seg or "
                           f"snapshot-*.json there: not a data_dir backup")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    have = [n for n in os.listdir(data_dir) if n not in ("LOCK", "lost+found")]
    if have:
        raise StartupError(EXIT_CONFIG, f"--restore-from: data_dir {data_dir} is not "
                           f"empty ({len(have)} files, e.g. {sorted(have)[0]}); restore "
                           f"into an empty one")
    for n in files:
        shutil.copy2(os.path.join(src, n), os.path.join(data_dir, n))
    log.warning("restored from a backup files=%d from=%s; starting as a new cluster of "
                "one with a new member id (docs/CLUSTER.md, Backups)", len(files), src)


def record_in_log(data_dir: str, names) -> None:
    """The log holds the configuration now: members.json only says so (and who, for
    a reader). OSError: the caller logs it; the next start checks raft_peers again."""
    write_atomic(os.path.join(data_dir, "members.json"),
                 json.dumps({"members": sorted(names), "in_log": True}).encode())

"""broker_peers.py: what members say of their broker, and the leader's handover rule,
on a hand-driven clock."""
from dqorch.broker_peers import DOWN_S, STALE_S, BrokerPeers


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_leader_without_its_broker_hands_over_after_the_bound_to_one_that_has_it():
    clock = Clock()
    bp = BrokerPeers(10, clock)
    bp.own(True)
    bp.heard("b", True, 60_000)
    bp.heard("c", False, 1_000)
    assert bp.handover_to(["c", "b"]) is None            # its own works
    bp.own(False)
    clock.t += 9
    bp.heard("b", True, 60_000)
    bp.heard("c", False, 1_000)
    assert bp.handover_to(["c", "b"]) is None            # not for 10 s yet
    clock.t += 2
    bp.heard("b", True, 60_000)
    bp.heard("c", True, 500)
    assert bp.handover_to(["c", "b"]) == "c"             # the first candidate that can
    assert bp.handover_to(["c", "b"]) is None            # once per bound
    clock.t += 10
    bp.heard("c", True, 500)
    assert bp.handover_to(["c"]) == "c" and bp.handovers == 2


def test_a_stale_report_or_none_is_no_reason_to_hand_over():
    clock = Clock()
    bp = BrokerPeers(2, clock)
    bp.own(False)
    bp.heard("b", True, 0)
    clock.t += STALE_S + 0.1
    assert bp.said("b") is None
    assert bp.handover_to(["b", "c"]) is None
    assert BrokerPeers(0, clock).handover_to(["b"]) is None      # 0: never


def test_a_witness_says_nothing_of_a_broker():
    bp = BrokerPeers(1, Clock())
    assert bp.own_ok is None and bp.handover_to(["b"]) is None


def test_a_follower_reports_the_leaders_broker_down_only_past_a_blip():
    clock = Clock()
    bp = BrokerPeers(10, clock)
    assert bp.leader_check("a") == {"node": "a", "ok": None}
    bp.heard("a", False, 1_000)
    assert bp.leader_check("a")["ok"] is True              # a reconnect, maybe
    bp.heard("a", False, int(DOWN_S * 1000) + 1_000)
    check = bp.leader_check("a")
    assert check["ok"] is False and "cannot publish" in check["error"]
    bp.heard("a", True, 0)
    assert bp.leader_check("a")["ok"] is True

"""peer_news.py: what members say of their broker and clock, and the leader's handover
rules, on a hand-driven clock."""
from dqorch.peer_news import DOWN_S, RETRY_S, STALE_S, PeerNews

SKEW = 5000


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_leader_without_its_broker_hands_over_after_the_bound_to_one_that_has_it():
    clock = Clock()
    pn = PeerNews(10, SKEW, clock)
    pn.own(True)
    pn.heard("b", True, 60_000, 0)
    pn.heard("c", False, 1_000, 0)
    assert pn.handover_to(["c", "b"], 0) is None           # its own works
    pn.own(False)
    clock.t += 9
    pn.heard("b", True, 60_000, 0)
    pn.heard("c", False, 1_000, 0)
    assert pn.handover_to(["c", "b"], 0) is None           # not for 10 s yet
    clock.t += 2
    pn.heard("b", True, 60_000, 0)
    pn.heard("c", True, 500, SKEW + 1)                     # works, but its clock is off
    assert pn.handover_to(["c", "b"], 0) == ("b", "broker")
    assert pn.handover_to(["c", "b"], 0) is None           # once per bound
    clock.t += 10
    pn.heard("c", True, 500, 0)
    assert pn.handover_to(["c"], 0) == ("c", "broker")
    assert pn.handovers == {"broker": 2, "clock": 0}


def test_a_leader_whose_clock_is_off_hands_over_at_once_to_one_whose_is_not():
    clock = Clock()
    pn = PeerNews(10, SKEW, clock)
    pn.own(True)
    pn.heard("b", True, 1_000, -7_200_000)                 # b is the one off: not b
    pn.heard("c", True, 1_000, 40)
    assert pn.handover_to(["b", "c"], SKEW) is None         # within the bound: stays
    assert pn.handover_to(["b", "c"], 7_200_000) == ("c", "clock")
    assert pn.handover_to(["b", "c"], 7_200_000) is None    # once per RETRY_S
    clock.t += RETRY_S
    pn.heard("c", True, 1_000, 40)
    assert pn.handover_to(["c"], -7_200_000) == ("c", "clock")


def test_a_stale_report_or_none_is_no_reason_to_hand_over():
    clock = Clock()
    pn = PeerNews(2, SKEW, clock)
    pn.own(False)
    pn.heard("b", True, 0, 0)
    clock.t += STALE_S + 0.1
    assert pn.said("b") is None
    assert pn.handover_to(["b", "c"], 0) is None
    assert PeerNews(0, SKEW, clock).handover_to(["b"], 0) is None      # 0: never


def test_a_witness_says_nothing_of_a_broker():
    pn = PeerNews(1, SKEW, Clock())
    assert pn.own_ok is None and pn.handover_to(["b"], 0) is None
    pn.heard("w", None, 0, 0)
    assert pn.leader_check("w") == {"node": "w", "ok": None}


def test_a_follower_reports_the_leaders_broker_down_only_past_a_blip():
    clock = Clock()
    pn = PeerNews(10, SKEW, clock)
    assert pn.leader_check("a") == {"node": "a", "ok": None}
    pn.heard("a", False, 1_000, 0)
    assert pn.leader_check("a")["ok"] is True              # a reconnect, maybe
    pn.heard("a", False, int(DOWN_S * 1000) + 1_000, 0)
    check = pn.leader_check("a")
    assert check["ok"] is False and "cannot publish" in check["error"]
    pn.heard("a", True, 0, 0)
    assert pn.leader_check("a")["ok"] is True

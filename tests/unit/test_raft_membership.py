"""raft/membership.py's rules, on plain values."""
import pytest

from dqorch.raft import membership as M


def three():
    return M.Config(tuple(M.Member(n, M.VOTER, id=f"id-{n}") for n in ("a", "b", "c")), 7)


def test_rule_1_one_voter_at_a_time():
    cfg = three()
    with pytest.raises(M.ChangeRefused, match="one voter at a time"):
        cfg._with((M.Member("a"),))
    with pytest.raises(M.ChangeRefused, match="a member already"):
        cfg.add(M.Member("b", M.LEARNER))
    learner = cfg.add(M.Member("d", M.LEARNER))
    with pytest.raises(M.ChangeRefused, match="not been heard from"):
        learner.promote("d")
    assert learner.with_id("d", "id-d").promote("d").voters == ("a", "b", "c", "d")


def test_rule_3_a_removed_id_stays_removed_and_travels_with_the_configuration():
    cfg = three().remove("c")
    assert cfg.removed == {"id-c"} and cfg.voters == ("a", "b")
    again = cfg.add(M.Member("c", M.LEARNER))
    with pytest.raises(M.ChangeRefused, match="removed"):
        again.with_id("c", "id-c")
    back = M.Config.from_dict(again.with_id("c", "id-c2").to_dict(), 9)
    assert back.removed == {"id-c"} and back.get("c").id == "id-c2"
    # Removing a member never heard from records nothing; the set only grows.
    assert back.remove("c").removed == {"id-c", "id-c2"}
    assert back.add(M.Member("e", M.LEARNER)).remove("e").removed == {"id-c"}


def test_a_configuration_without_removed_ids_reads_as_before():
    d = three().to_dict()
    assert "removed" not in d
    assert M.Config.from_dict(d, 3).removed == frozenset()
    with pytest.raises(ValueError):
        M.Config.from_dict({"members": [{"name": "a"}], "removed": 5}, 3)

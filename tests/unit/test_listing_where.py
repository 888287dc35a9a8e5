"""What the console needs of the registry: the listing's filters that no index answers
(state.where_match: id prefix, time ranges, error text, retry count), paging by offset,
and the discard command (state._apply_discard), which forgets a finished job the way
retention does."""
import pytest

from dqorch import parse
from dqorch import state as S
from dqorch.errors import ApiError
from tests.unit.helpers import T0, cancel, check, fingerprint, reg, rep, run


def many(n: int) -> S.State:
    """n jobs, ids "job-0".."job-{n-1}", created 10 ms apart; every third failed with
    "disk full" (retry_count 0), every third from 1 failed after one retry with "timeout",
    the rest pending."""
    st = S.State()
    for i in range(n):
        at = T0 + 10 * i
        jid = f"job-{i}"
        if i % 3 == 0:
            run(st, reg(jid, at, max_retries=0), rep(jid, "running", at + 1),
                rep(jid, "failed", at + 2, errorMessage="Disk full on /var"))
        elif i % 3 == 1:
            run(st, reg(jid, at, max_retries=1), rep(jid, "running", at + 1),
                rep(jid, "failed", at + 2, errorMessage="x"), rep(jid, "running", at + 3),
                rep(jid, "failed", at + 4, errorMessage="timeout"))
        else:
            run(st, reg(jid, at))
    return st


def ids(page) -> list:
    return [j["id"] for j in page]


def listing(st, query: dict) -> tuple:
    q = parse.list_query(query)
    page, count, nxt = S.list_jobs(st, q["filters"], q["limit"], q["cursor"], q["where"],
                                   q["offset"])
    return ids(page), count, nxt


def test_id_prefix_finds_the_jobs_whose_id_begins_so_newest_first():
    st = many(30)
    got, count, nxt = listing(st, {"id_prefix": "job-2"})
    assert got == ["job-29", "job-28", "job-27", "job-26", "job-25", "job-24", "job-23",
                   "job-22", "job-21", "job-20", "job-2"]
    assert (count, nxt) == (11, None)
    assert listing(st, {"id_prefix": "nope"})[:2] == ([], 0)


def test_created_and_finished_ranges_are_half_open():
    st = many(9)
    got, count, _ = listing(st, {"created_since": str(T0 + 30), "created_before": str(T0 + 60)})
    assert (got, count) == (["job-5", "job-4", "job-3"], 3)
    # job-3 failed at T0+32, job-4 at T0+44, job-6 at T0+62; pending jobs never finished
    got, count, _ = listing(st, {"finished_since": str(T0 + 32),
                                 "finished_before": str(T0 + 62)})
    assert (got, count) == (["job-4", "job-3"], 2)


def test_error_text_matches_any_case_and_retry_count_a_range():
    st = many(9)
    assert listing(st, {"error": "DISK"})[:2] == (["job-6", "job-3", "job-0"], 3)
    assert listing(st, {"retry_count_min": "1"})[:2] == (["job-7", "job-4", "job-1"], 3)
    got, count, _ = listing(st, {"status": "failed", "retry_count_max": "0"})
    assert (got, count) == (["job-6", "job-3", "job-0"], 3)


def test_offset_skips_that_many_matches_with_and_without_a_walk():
    st = many(30)
    assert listing(st, {"limit": "3", "offset": "5"})[0] == ["job-24", "job-23", "job-22"]
    # status alone: answered from the index's blocks; with where: by a walk
    assert listing(st, {"status": "pending", "limit": "2", "offset": "3"})[0] == \
        ["job-20", "job-17"]
    assert listing(st, {"id_prefix": "job-1", "limit": "2", "offset": "3"})[0] == \
        ["job-16", "job-15"]
    got, count, nxt = listing(st, {"limit": "5", "offset": "30"})
    assert (got, count, nxt) == ([], 30, None)
    # the last page: the count says where it begins
    got, _, nxt = listing(st, {"limit": "7", "offset": str(28)})
    assert (got, nxt) == (["job-1", "job-0"], None)


def test_nth_below_counts_across_blocks():
    seqs = S.SortedSeqs.of_sorted(list(range(5000)))
    assert [seqs.nth_below(None, k) for k in (0, 1, 1023, 1024, 4999, 5000)] == \
        [4999, 4998, 3976, 3975, 0, None]
    assert seqs.nth_below(2000, 0) == 1999 and seqs.nth_below(2000, 1999) == 0
    assert seqs.nth_below(2000, 2000) is None
    assert S.SortedSeqs().nth_below(None, 0) is None


def test_where_filters_reach_the_bulk_selection():
    st = many(12)
    assert S.terminal_ids(st, {}, ["failed"], None, {"error": "disk"}) == \
        ["job-9", "job-6", "job-3", "job-0"]
    assert S.terminal_ids(st, {}, ["failed"], 2, {"error": "disk"}) == ["job-9", "job-6"]


def test_discard_forgets_finished_jobs_and_leaves_the_others():
    st = S.State()
    run(st, reg("done", T0), rep("done", "running", T0 + 1), rep("done", "completed", T0 + 2),
        reg("gone", T0 + 3), cancel("gone", T0 + 4), reg("live", T0 + 5))
    out = run(st, {"op": "discard", "ids": ["done", "live", "nope", "gone"], "at_ms": T0 + 6})
    assert out == {"outcome": "discarded", "results": {
        "done": "discarded", "live": "pending", "nope": "not_found", "gone": "discarded"}}
    assert sorted(st.jobs) == ["live"] and st.evicted == 0
    check(st)
    # A discarded id registered again is a new job.
    run(st, reg("done", T0 + 7))
    assert st.jobs["done"]["status"] == "pending"


def test_a_log_with_discards_applies_the_same_twice():
    log = [reg("a", T0, max_retries=0), rep("a", "running", T0 + 1),
           rep("a", "failed", T0 + 2, errorMessage="e"), reg("b", T0 + 3),
           {"op": "discard", "ids": ["a", "b"], "at_ms": T0 + 4}, reg("a", T0 + 5)]
    one, two = S.State(), S.State()
    run(one, *log)
    run(two, *log)
    assert fingerprint(one) == fingerprint(two)


@pytest.mark.parametrize("query", [{"offset": "-1"}, {"created_since": "soon"},
                                   {"retry_count_min": "1001"}, {"id_prefix": "a\nb"},
                                   {"error": "x" * 201}])
def test_bad_where_values_are_400_naming_the_field(query):
    with pytest.raises(ApiError) as e:
        parse.list_query(query)
    assert e.value.status == 400 and e.value.field == next(iter(query))

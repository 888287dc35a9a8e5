"""Failures in the log (issue 31): a line per failed attempt and per final failure,
a summary past LINES_PER_S a second."""
import logging

from dqorch import failure_log
from tests.unit.helpers import T0, fresh, reg, rep, run


def test_a_line_per_failure_then_a_summary(caplog):
    clock = [100.0]
    fl = failure_log.FailureLog(lambda: clock[0])
    st = fresh(reg("j", T0, maxRetries=1, type="etl"), reg("k", T0, maxRetries=0, type="etl"))
    for id_ in "jk":
        run(st, rep(id_, "running", T0 + 1), rep(id_, "failed", T0 + 2,
                                                  errorMessage="disk full"))
    with caplog.at_level(logging.INFO, logger="dqorch.jobs"):
        fl.failed(st.jobs["j"], final=False)
        for _ in range(failure_log.LINES_PER_S + 4):
            fl.failed(st.jobs["k"], final=True)
        clock[0] += 1
        fl.flush()
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == ("job attempt failed id=j type=etl worker=w1 attempt=1 retry=1/1 "
                       "error=disk full")
    assert msgs[1] == "job failed id=k type=etl worker=w1 attempts=1 error=disk full"
    assert len(msgs) == failure_log.LINES_PER_S + 1
    assert msgs[-1].startswith("job failures not logged one by one count=5 by_type=etl=5")


def test_type_labels_are_bounded_and_never_change():
    from dqorch.metrics import TypeLabels
    label = TypeLabels(2)
    assert [label(t) for t in ("a", "b", "c", "a", "d", "b")] == ["a", "b", "other", "a",
                                                                  "other", "b"]
    assert TypeLabels(0)("a") == "other"

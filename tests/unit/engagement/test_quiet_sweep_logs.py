"""The sweeper runs every second: arq's start and end lines of its runs are dropped from the worker's output,
nothing else is."""

from __future__ import annotations

import inspect
import logging

import arq.worker
import pytest

from siyu.engagement import jobs

SWEEP_REF = "cron:engagement.sweep"  # arq names a cron job's runs by the job's name alone
QUEUED_SWEEP_REF = "cron:engagement.sweep:1764900000000:cron:engagement.sweep"


def test_arq_still_logs_runs_in_the_words_the_filter_knows() -> None:
    source = inspect.getsource(arq.worker)
    for line in jobs.QuietSweeps.ROUTINE:
        assert line in source


def test_only_the_sweepers_routine_lines_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    jobs.quiet_sweep_logs()
    jobs.quiet_sweep_logs()  # once per process, however often it is asked
    arq_log = logging.getLogger("arq.worker")
    assert sum(isinstance(f, jobs.QuietSweeps) for f in arq_log.filters) == 1
    with caplog.at_level(logging.INFO, logger="arq.worker"):
        arq_log.info("%6.2fs → %s(%s)%s", 0.01, SWEEP_REF, "", "")
        arq_log.info("%6.2fs ← %s ● %s", 0.2, SWEEP_REF, "idle")
        arq_log.info("%6.2fs → %s(%s)%s", 0.01, QUEUED_SWEEP_REF, "", "")
        arq_log.info("%6.2fs → %s(%s)%s", 0.01, "7f3a:inbox.send_message", "1, 2", "")
        arq_log.info("%6.2fs ← %s ● %s", 0.3, "7f3a:inbox.send_message", "sent")
        arq_log.info("%6.2fs → %s(%s)%s", 0.01, "cron:engagement.evaluate", "", "")
        arq_log.warning("%6.2fs ! %s max retries %d exceeded", 1.0, SWEEP_REF, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "arq.worker"]
    assert not any("engagement.sweep" in line and ("→" in line or "←" in line) for line in lines)
    assert sum("inbox.send_message" in line for line in lines) == 2
    assert any("engagement.evaluate" in line for line in lines)
    assert any("max retries" in line and "engagement.sweep" in line for line in lines)

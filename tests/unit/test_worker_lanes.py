"""The re-engagement lane's worker (`siyu worker --lane engagement`) is the main worker on another queue: the
same job serialization, start-up and shut-down hooks, limits. arq reads a settings class's own attributes
only, not those it inherits, which left the lane unable to read its own cron jobs (pickle against JSON) and
without the database its jobs need."""

from __future__ import annotations

from siyu import worker as worker_root
from siyu.engagement.lane import QUEUE


def test_the_engagement_lane_runs_with_the_main_workers_settings() -> None:
    main = worker_root.build_worker(burst=True, lane="main", handle_signals=False)
    lane = worker_root.build_worker(burst=True, lane="engagement", handle_signals=False)
    assert lane.queue_name == QUEUE != main.queue_name
    for attr in ("job_serializer", "job_deserializer", "on_startup", "on_shutdown", "max_jobs", "keep_result_s"):
        assert getattr(lane, attr) == getattr(main, attr), attr
    assert set(lane.functions) < set(main.functions)
    assert {c.name for c in lane.cron_jobs} == {c.name for c in worker_root.ENGAGEMENT_CRONS}


def test_each_worker_polls_at_its_own_pace() -> None:
    """A cron run goes to the worker that polls first after it is due: with equal paces that was always the same
    worker, and the engagement sweepers never spread over the lane's processes."""
    delays = {worker_root.build_worker(burst=True, lane="engagement", handle_signals=False).poll_delay_s
              for _ in range(5)}
    assert len(delays) > 1
    assert all(0.4 <= d <= 0.6 for d in delays)

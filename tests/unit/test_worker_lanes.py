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

"""Cron expressions as Kubeflow Pipelines reads them.

KFP's API server validates, and its scheduled-workflow controller computes the next run with, robfig/cron
v1.2.0's `cron.Parse` (backend/src/apiserver/server/api_converter.go,
backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go): **seconds first**, then minute,
hour, day of month, month, and an optional day of week. So the usual five-field "0 3 * * *" is read
as second 0, minute 3, every hour: 24 runs a day (kubeflow/pipelines#5014). This module accepts
only six fields, and says what a five-field expression would have meant and what to write instead.
The next run times come from croniter with its seconds-first option.
"""
import datetime
from typing import List

FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")


class CronError(ValueError):
    """An expression KFP would refuse, or would read otherwise than a five-field cron does."""


def check(expression: str) -> str:
    """The expression if KFP reads it as meant: six fields, seconds first, each valid."""
    from croniter import croniter
    fields = expression.split()
    if len(fields) == 5:
        read_as = ", ".join(f"{name} {value}" for name, value in zip(FIELDS, fields))
        raise CronError(
            f"cron {expression!r} has 5 fields; Kubeflow Pipelines reads cron with seconds first, so it would read "
            f"it as {read_as}: not what a 5-field cron means. For minute {fields[0]}, hour {fields[1]}, write the "
            f"6 fields {'0 ' + expression!r}")
    if len(fields) != 6:
        raise CronError(f"cron {expression!r} has {len(fields)} fields; Kubeflow Pipelines wants 6: "
                        f"{', '.join(FIELDS)} (e.g. '0 0 3 * * *' for 03:00 every day)")
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise CronError(f"cron {expression!r} is not valid: its 6 fields are {', '.join(FIELDS)}")
    return expression


def next_runs(expression: str, count: int = 3, after: datetime.datetime = None) -> List[datetime.datetime]:
    """The next `count` run times in UTC (KFP's controller uses UTC unless CRON_SCHEDULE_TIMEZONE is set)."""
    from croniter import croniter
    after = after or datetime.datetime.now(datetime.timezone.utc)
    times = croniter(check(expression), after, second_at_beginning=True)
    return [times.get_next(datetime.datetime) for _ in range(count)]

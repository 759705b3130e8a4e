"""Recurring schedules: cron expressions in IANA time zones, fired by the aggregator.

- ``cron``: parsing and due times (pure, over the ``cronsim`` library);
- ``plan``: what a due schedule does now, given its policies (pure);
- ``documents``: the ``schedules`` collection and its conditional writes;
- ``firing``: the sweep that creates exactly one task per due time.
"""

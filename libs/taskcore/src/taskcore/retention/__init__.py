"""Retention of finished work: which task trees have been finished long enough to go
(``policy``, pure) and removing them with their event logs and dead letters
(``sweeper``)."""

from taskcore.retention.policy import RetentionPolicy, TaskRecord, removable_trees
from taskcore.retention.sweeper import RetentionSweeper

__all__ = ["RetentionPolicy", "RetentionSweeper", "TaskRecord", "removable_trees"]

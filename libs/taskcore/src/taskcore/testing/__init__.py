"""Test helpers shipped with taskcore: condition waits, isolated broker and store namespaces."""

from taskcore.testing.wait import wait_for, wait_for_async

__all__ = ["wait_for", "wait_for_async"]

"""Fixtures for the aggregator's integration tests: a confirmed publisher on the test's
vhost (topology declared) and a raw connection for inspecting queues."""

from __future__ import annotations

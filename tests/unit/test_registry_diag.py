"""The diagnostic task types are off unless asked for."""

from __future__ import annotations

from taskcore.registry import load_registry
from taskcore.settings import Settings


def test_a_deployment_has_no_diag_types_unless_it_enables_them() -> None:
    off = load_registry(Settings(enable_diag=False))
    on = load_registry(Settings(enable_diag=True))

    assert not [name for name in off.names() if name.startswith("diag.")]
    assert {"diag.noop", "diag.fanout", "diag.echo"} <= set(on.names())
    assert "workflow" in off.names(), "the types taskcore needs stay registered"

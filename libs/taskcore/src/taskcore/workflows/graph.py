"""The step graph: what each step depends on, directly and transitively, and its cycles.

Edges point from a step to the steps in its ``depends_on``. At most 100 steps, so plain
searches per step are fast enough and stay correct on graphs that have cycles (validation
reports the cycles and still checks everything else).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Graph = Mapping[str, Sequence[str]]  # step id -> the ids it depends on, in order


@dataclass(frozen=True)
class Cycle:
    """A dependency cycle, found as the edge ``steps[-1] -> steps[0]`` that closes it.

    ``steps`` lists the cycle in dependency order: each step depends on the next, and the
    last on the first. ``closing_edge`` is the position of ``steps[0]`` in the
    ``depends_on`` of ``steps[-1]``.
    """

    steps: tuple[str, ...]
    closing_edge: int

    def describe(self) -> str:
        """``c -> a -> b -> c``, from the step holding the closing edge ("->": depends on)."""
        closer = self.steps[-1]
        return " -> ".join((closer, *self.steps[:-1], closer))


def upstream(graph: Graph) -> dict[str, frozenset[str]]:
    """For each step, every step it depends on directly or transitively (never itself)."""
    return {step: _reachable(graph, step) - {step} for step in graph}


def downstream(graph: Graph) -> dict[str, frozenset[str]]:
    """For each step, every step that depends on it directly or transitively."""
    above = upstream(graph)
    return {step: frozenset(s for s in graph if step in above[s]) for step in graph}


def find_cycles(graph: Graph) -> list[Cycle]:
    """One ``Cycle`` per edge that closes a cycle in a depth-first search that visits
    steps and their dependencies in order: every cycle shows at least once, and the
    answer is the same for the same graph. Edges to unknown steps are ignored."""
    cycles: list[Cycle] = []
    done: set[str] = set()
    for root in graph:
        if root not in done:
            _search(graph, root, [], done, cycles)
    return cycles


def _search(graph: Graph, step: str, path: list[str], done: set[str], out: list[Cycle]) -> None:
    path.append(step)
    for position, dep in enumerate(graph[step]):
        if dep in path:
            out.append(Cycle(tuple(path[path.index(dep) :]), position))
        elif dep in graph and dep not in done:
            _search(graph, dep, path, done, out)
    path.pop()
    done.add(step)


def _reachable(graph: Graph, start: str) -> frozenset[str]:
    seen: set[str] = set()
    stack = [d for d in graph[start] if d in graph]
    while stack:
        step = stack.pop()
        if step not in seen:
            seen.add(step)
            stack.extend(d for d in graph[step] if d in graph)
    return frozenset(seen)

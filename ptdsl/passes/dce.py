"""Dead-node elimination: drop every node no output depends on."""
from __future__ import annotations

from ptdsl.ir.graph import copy, reachable


def eliminate_dead(g):
    keep = reachable(g)
    dead = [n for n in g.nodes if n not in keep]
    if not dead:
        return g, [], False
    h = copy(g)
    h.remove_nodes_from(dead)
    return h, [], True

"""ir/graph.order is networkx's lexicographical topological sort (operands first, then by
id), written out for speed: the same order on any DAG, and an error on a cycle."""
import networkx as nx
import pytest
from hypothesis import given, strategies as st

from ptdsl.ir.graph import order


@st.composite
def dags(draw):
    ids = draw(st.lists(st.integers(0, 500), min_size=1, max_size=40, unique=True))
    rank = draw(st.permutations(ids))  # edges only go forward in this order: acyclic
    g = nx.DiGraph()
    g.add_nodes_from(ids)
    for i, a in enumerate(rank):
        for b in rank[i + 1:]:
            if draw(st.integers(0, 9)) == 0:
                g.add_edge(a, b)
    return g


@given(dags())
def test_order_is_the_lexicographical_topological_sort(g):
    assert order(g) == list(nx.lexicographical_topological_sort(g))


def test_order_rejects_a_cycle():
    g = nx.DiGraph([(1, 2), (2, 3), (3, 1), (0, 1)])
    with pytest.raises(nx.NetworkXUnfeasible):
        order(g)

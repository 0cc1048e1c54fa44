"""Equivalence engine: hypothesis strategies and checks (see strategies.py)."""

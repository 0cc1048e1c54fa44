"""Inspecting methods: graph views and renderers (view.py, render.py, graphviz.py),
structural diffs of two methods (canon.py, diff.py, diff_text.py). No torch."""

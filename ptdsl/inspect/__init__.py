"""Inspecting methods: graph views and their renderings (view.py, render.py, gallery.py)
and structural diffs of two methods (canon.py, diff.py, diff_text.py). No torch."""

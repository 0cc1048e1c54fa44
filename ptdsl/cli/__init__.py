"""The `ptdsl` command line (see cli/main.py)."""

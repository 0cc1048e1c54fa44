"""The version's single source: pyproject.toml (hatchling reads this file), `ptdsl --version`,
`ptdsl.__version__`, the `requires` check and CHANGELOG.md agree (tests/contract/test_version.py).
A leaf module, so any layer may import it."""
__version__ = "0.2.0"

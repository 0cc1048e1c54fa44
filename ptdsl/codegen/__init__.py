"""Code generation (readable torch source) and the IR interpreter (the oracle)."""

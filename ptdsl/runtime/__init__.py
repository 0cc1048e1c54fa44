"""The training runtime: compiled methods train Hugging Face causal LMs under
accelerate (see loop.py, the one training loop)."""

"""A pairwise human-evaluation arena for LLMs."""

"""Decoding local models on the CPU: one batch per loaded model, each row with its own settings.

Used by the transformers backend (`arena.backends.transformers_local`); kept apart from
`arena.backends`, which holds one module per backend and nothing else.
"""

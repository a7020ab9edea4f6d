"""Model backends: one interface (`base.Backend`), one module per backend.

Which module serves which `backend:` value is said once, in `arena.config.BACKEND_KINDS`; modules are
imported only when a model uses them, so that, for example, an arena of remote endpoints never
imports torch.
"""

from __future__ import annotations

import importlib

from arena.backends.base import Backend, Delta, GenerationError, Message, cause_text
from arena.config import BACKEND_KINDS, ModelEntry


def backend_class(entry: ModelEntry) -> type[Backend]:
    kind = BACKEND_KINDS[entry.backend]
    return getattr(importlib.import_module(kind.module), kind.class_name)


__all__ = ["Backend", "Delta", "GenerationError", "Message", "backend_class", "cause_text"]

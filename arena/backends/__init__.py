"""Model backends: one interface (`base.Backend`), one module per backend.

Backends are imported lazily so that, for example, an arena of remote
endpoints never imports torch.
"""

from __future__ import annotations

import importlib

from arena.backends.base import Backend, Delta, GenerationError, Message
from arena.config import BACKENDS, ModelEntry

_BACKEND_CLASSES = {
    "transformers": ("arena.backends.transformers_local", "TransformersBackend"),
    "openai": ("arena.backends.openai_compatible", "OpenAICompatibleBackend"),
    "scripted": ("arena.backends.scripted", "ScriptedBackend"),
}


assert set(_BACKEND_CLASSES) == set(BACKENDS), "models.yaml's backends and their classes must name the same ones"


def backend_class(entry: ModelEntry) -> type[Backend]:
    module_name, class_name = _BACKEND_CLASSES[entry.backend]
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["Backend", "Delta", "GenerationError", "Message", "backend_class"]

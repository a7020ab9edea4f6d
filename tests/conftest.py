"""Shared fixtures: real SQLite files, real configs, the real bundled model."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def write_config(directory: Path, text: str, name: str = "models.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


SCRIPTED_MODELS = """
    settings:
      sampling: uniform
      generation_timeout_s: 2
      limits: {battles_per_hour: 1000, max_prompt_chars: 200, max_turns: 3}
    models:
      - {name: echo-one, backend: scripted, script: echo}
      - {name: echo-two, backend: scripted, script: echo}
      - {name: constant-bot, backend: scripted, script: "reply: A calm and steady answer."}
"""


@pytest.fixture
def scripted_config(tmp_path):
    from arena.config import load_config

    return load_config(write_config(tmp_path, SCRIPTED_MODELS))


@pytest.fixture
def make_service(tmp_path):
    """Build an ArenaService over a real SQLite file with models already loaded."""
    from arena.config import load_config
    from arena.roster import Roster
    from arena.service import ArenaService
    from arena.storage import ArenaStore

    stores = []

    def build(config_text: str = SCRIPTED_MODELS, seed: int = 0):
        config = load_config(write_config(tmp_path, config_text))
        store = ArenaStore(tmp_path / "arena.db")
        stores.append(store)
        store.register_models(config.enabled_models)
        roster = Roster(config)
        roster.load(report=lambda message: None)
        return ArenaService(config, roster, store, seed=seed)

    yield build
    for store in stores:
        store.close()

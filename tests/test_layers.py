"""The layers stay apart: the library knows nothing of Gradio, and the rating engine runs alone on a vote file.

Each check runs in a fresh interpreter, so what it finds loaded is what the
module itself pulled in, not what another test imported first.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, shared_file

WEB_AND_MODELS = ("gradio", "torch", "transformers", "uvicorn", "fastapi")
# What a researcher with an exported vote file needs: numpy, and nothing of the serving side.
RATING_ENGINE = ("arena.ratings", "arena.leaderboard", "arena.battle_files", "arena.reports")
SERVING_ONLY = (*WEB_AND_MODELS, "sqlite_utils", "yaml", "matplotlib")
LIBRARY = ("arena.battle", "arena.sampling", "arena.duel", "arena.limits", "arena.identity", "arena.config",
           "arena.storage", "arena.roster", "arena.service", "arena.plots", "arena.cli", *RATING_ENGINE)


def loaded_after(code: str) -> set[str]:
    """Top-level packages loaded once `code` has run (or exited) in a fresh interpreter."""
    probe = ("import atexit, json, sys\n"
             "atexit.register(lambda: print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr))\n"
             + code)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_imports_no_web_framework_and_no_model_code(module):
    assert not loaded_after(f"import {module}") & set(WEB_AND_MODELS)


@pytest.mark.parametrize("module", RATING_ENGINE)
def test_the_rating_engine_needs_nothing_of_the_serving_side(module):
    assert not loaded_after(f"import {module}") & set(SERVING_ONLY)


def test_ratings_on_a_vote_file_load_nothing_of_the_serving_side():
    votes = shared_file("llmfao_battles.jsonl")
    loaded = loaded_after("import runpy\n"
                          f"sys.argv = ['arena', 'ratings', '--battles', {str(votes)!r}, '--bootstrap', '0']\n"
                          "runpy.run_module('arena', run_name='__main__')")
    assert "numpy" in loaded and "arena" in loaded  # it ran the ratings
    assert not loaded & (set(SERVING_ONLY) - {"yaml"})  # the command line reads models.yaml for other commands

"""Serving the page must not copy what the server holds (the service, the models' weights)."""

from __future__ import annotations

import copy

from arena.ui.app import build_app
from tests.conftest import SCRIPTED_MODELS


def test_nothing_in_the_page_config_drags_the_server_along_when_copied(make_service):
    # Gradio deep-copies the page's component config on every page load. A bound method there (a
    # State's delete_callback) would be copied with its object: the panel, the service, every model.
    config = build_app(make_service()).blocks.config
    callables = [(component["id"], key, value) for component in config["components"]
                 for key, value in component.get("props", {}).items() if callable(value)]
    assert callables, "expected the battle state's delete_callback in the page config"
    for component_id, key, value in callables:
        assert copy.deepcopy(value) is value, f"component {component_id}: {key} would be copied with its owner"


def markdown_texts(page) -> list[str]:
    return [c["props"].get("value") for c in page.blocks.config["components"] if c.get("type") == "markdown"]


def test_volunteers_are_told_what_is_kept_unless_the_operator_says_otherwise(make_service):
    told = markdown_texts(build_app(make_service()))
    assert any(text and "stored" in text and "personal" in text for text in told)
    quiet = make_service(SCRIPTED_MODELS.replace("sampling: uniform", 'sampling: uniform\n      notice: ""'))
    assert not any(text and "personal" in text for text in markdown_texts(build_app(quiet)))

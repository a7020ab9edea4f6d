"""A model that cannot load: start-up stops naming it, or it is disabled and the rest serve."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arena.config import load_config
from arena.roster import ModelLoadError, Roster
from tests.conftest import ROOT, free_port, wait_until, write_config

BROKEN = """
    settings: {{on_load_failure: {policy}}}
    models:
      - {{name: fine-one, backend: scripted, script: echo}}
      - {{name: fine-two, backend: scripted, script: echo}}
      - {{name: hollow-model, backend: transformers, source: ./broken-weights}}
"""


def make_broken_weights(tmp_path):
    """A model directory that passes the config check but cannot load: its config.json is damaged."""
    (tmp_path / "broken-weights").mkdir()
    (tmp_path / "broken-weights" / "config.json").write_text('{"model_type": "llama", "hidden_size": ')


@pytest.fixture
def broken_config(tmp_path):
    make_broken_weights(tmp_path)

    def make(policy: str):
        return write_config(tmp_path, BROKEN.format(policy=policy))

    return make


def test_stop_policy_names_the_model_and_the_cause(broken_config):
    roster = Roster(load_config(broken_config("stop")))
    with pytest.raises(ModelLoadError) as caught:
        roster.load(report=lambda message: None)
    assert "model 'hollow-model' failed to load" in str(caught.value) and "broken-weights" in str(caught.value)
    assert not roster.ready.is_set()


def test_disable_policy_serves_the_rest(broken_config):
    roster = Roster(load_config(broken_config("disable")))
    roster.load(report=lambda message: None)
    assert roster.names == ["fine-one", "fine-two"] and "hollow-model" in roster.failures
    assert roster.ready.is_set()


def test_the_loading_count_volunteers_see_leaves_out_a_model_that_failed(tmp_path):
    port = free_port()  # nothing listens there: the remote model fails to load, first (remote checks go first)
    roster = Roster(load_config(write_config(tmp_path, f"""
        settings: {{on_load_failure: disable}}
        models:
          - {{name: far-away, backend: openai, base_url: "http://127.0.0.1:{port}/v1", model: m}}
          - {{name: fine-one, backend: scripted, script: echo}}
          - {{name: fine-two, backend: scripted, script: echo}}
    """)))
    stages = []
    roster.load(report=lambda message: stages.append(roster.loading_stage) if message.startswith("[") else None)
    assert stages == ["0 of 3 loaded", "0 of 3 loaded", "1 of 3 loaded"] and "far-away" in roster.failures
    assert roster.loading_stage == "ready"


def test_serve_exits_with_the_model_name(broken_config, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "arena", "serve", "--config", str(broken_config("stop")), "--db", str(tmp_path / "a.db"),
         "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "model 'hollow-model' failed to load from" in done.stderr


def test_bad_config_stops_serve_before_anything_starts(tmp_path):
    config = write_config(tmp_path, "models:\n  - {name: one, backend: scripted, script: echo, colour: red}\n")
    done = subprocess.run([sys.executable, "-m", "arena", "serve", "--config", str(config), "--db", str(tmp_path / "a.db")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert str(config) in done.stderr and "model 'one'" in done.stderr and "'colour'" in done.stderr
    assert not (tmp_path / "a.db").exists()


HOLLOW_FIRST = """
    settings: {on_load_failure: disable}
    models:
      - {name: hollow-model, backend: transformers, source: ./broken-weights}
      - {name: fine-one, backend: scripted, script: echo}
      - {name: fine-two, backend: scripted, script: echo}
"""


@pytest.mark.browser
def test_side_by_side_offers_only_models_that_loaded(start_arena, browser_page, tmp_path):
    make_broken_weights(tmp_path)
    arena = start_arena(HOLLOW_FIRST)
    page = browser_page
    page.goto(arena.url)
    page.get_by_role("tab", name="Side by side").click()
    picker = page.locator("#named-pick-a input")
    picker.wait_for()
    chosen = {picker.input_value(), page.locator("#named-pick-b input").input_value()}
    assert chosen == {"fine-one", "fine-two"}

    def offered() -> list[str]:
        picker.click()
        options = page.get_by_role("option")
        options.first.wait_for()
        names = sorted(text.split("\n")[-1] for text in options.all_inner_texts())  # the chosen one carries a tick
        picker.blur()
        return names

    # The page is built before the models load, offering all three; the list of those that loaded comes with
    # the page's load event, which can arrive after the list was first opened (an open list keeps its options).
    wait_until(lambda: offered() == ["fine-one", "fine-two"], timeout_s=15, interval_s=0.5)
    assert offered() == ["fine-one", "fine-two"]


def test_too_few_models_left_says_so(tmp_path):
    make_broken_weights(tmp_path)
    config = write_config(tmp_path, """
        settings: {on_load_failure: disable}
        models:
          - {name: fine-one, backend: scripted, script: echo}
          - {name: hollow-model, backend: transformers, source: ./broken-weights}
    """)
    roster = Roster(load_config(config))
    with pytest.raises(ModelLoadError, match=r"only 1 model loaded \(fine-one\) and a battle needs two; "
                                             r"failed and disabled: hollow-model \("):
        roster.load(report=lambda message: None)


def test_a_port_that_is_taken_is_one_line(tmp_path):
    import socket

    config = write_config(tmp_path, "models:\n  - {name: one, backend: scripted, script: echo}\n"
                                    "  - {name: two, backend: scripted, script: echo}\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for args, message in ((["--port", str(port)], f"error: cannot listen on 127.0.0.1:{port}"),
                              (["--port", "99999"], "--port: must be a port number from 1 to 65535")):
            done = subprocess.run([sys.executable, "-m", "arena", "serve", "--config", str(config),
                                   "--db", str(tmp_path / "a.db"), *args],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
            assert message in done.stderr, done.stderr
            if "cannot listen" in message:  # not the web server's own error line as well
                assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("policy", ["stop", "disable"])
def test_settings_the_loaded_model_cannot_honour_fail_that_model(tmp_path, monkeypatch, policy):
    from arena.backends.scripted import ScriptedBackend

    monkeypatch.setattr(ScriptedBackend, "settings_problem",
                        lambda self, settings: "too many" if settings.max_new_tokens > 300 else None)
    config = write_config(tmp_path, f"""
        settings: {{on_load_failure: {policy}}}
        models:
          - {{name: fine-one, backend: scripted, script: echo}}
          - {{name: fine-two, backend: scripted, script: echo}}
          - {{name: greedy, backend: scripted, script: echo, max_new_tokens: 500}}
    """)
    roster = Roster(load_config(config))
    if policy == "stop":
        with pytest.raises(ModelLoadError, match="model 'greedy' failed to load: ValueError: too many"):
            roster.load(report=lambda message: None)
    else:
        roster.load(report=lambda message: None)
        assert roster.names == ["fine-one", "fine-two"] and roster.failures == {"greedy": "ValueError: too many"}


@pytest.mark.parametrize("policy", ["stop", "disable"])
def test_a_missing_key_variable_fails_before_any_weights_load(tmp_path, monkeypatch, policy):
    """Found without loading anything, so `stop` does not first spend minutes loading the other models."""
    monkeypatch.delenv("ARENA_TEST_UNSET_KEY", raising=False)
    config = write_config(tmp_path, f"""
        settings: {{on_load_failure: {policy}}}
        models:
          - {{name: one, backend: scripted, script: echo}}
          - {{name: two, backend: scripted, script: echo}}
          - {{name: remote, backend: openai, base_url: "http://127.0.0.1:9/v1", model: m, api_key_env: ARENA_TEST_UNSET_KEY}}
    """)
    reports: list[str] = []
    roster = Roster(load_config(config))
    if policy == "stop":
        with pytest.raises(ModelLoadError, match=r"model 'remote' failed to load from http://127.0.0.1:9/v1: "
                                                 r"the environment variable ARENA_TEST_UNSET_KEY is not set"):
            roster.load(report=reports.append)
        assert reports == []  # nothing was loaded first
    else:
        roster.load(report=reports.append)
        assert reports[0].startswith("    FAILED, disabled remote: the environment variable ARENA_TEST_UNSET_KEY")
        assert roster.names == ["one", "two"]


def test_a_folder_without_tokenizer_files_says_so(tmp_path):
    """Not transformers' advice to install sentencepiece: nothing to install would help."""
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "vocab_size": 100, "hidden_size": 8, '
                                        '"num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8}')
    config = write_config(tmp_path, """
        models:
          - {name: fine-one, backend: scripted, script: echo}
          - {name: no-tokenizer, backend: transformers, source: ./weights-only}
    """)
    with pytest.raises(ModelLoadError, match=r"weights-only has no tokenizer files \(none of tokenizer.json"):
        Roster(load_config(config)).load(report=lambda message: None)


def test_a_start_that_cannot_serve_leaves_a_served_database_as_it_was(start_arena, tmp_path):
    """A second server on a database another one serves, or on a taken port, changes nothing in it."""
    import sqlite3

    from gradio_client import Client

    models = "models:\n  - {name: one, backend: scripted, script: echo}\n  - {name: two, backend: scripted, script: echo}\n"
    arena = start_arena(models)
    Client(arena.url, verbose=False).submit("Hello", api_name="/battle_ask").result()  # open, not voted on
    changed = write_config(tmp_path, models.replace("script: echo}\n", "script: echo, temperature: 0.1}\n"),
                           name="changed.yaml")

    def database():
        # The file and its write-ahead log (the -shm index changes with every reader, this one included).
        files = {path.name: path.read_bytes() for path in (arena.db, arena.db.with_name(arena.db.name + "-wal"))}
        with sqlite3.connect(f"file:{arena.db}?mode=ro", uri=True) as connection:
            return (connection.execute("select status from battles").fetchall(),
                    connection.execute("select count(*) from model_history").fetchone(), files)

    before = database()
    assert before[0] == [("ready",)] and arena.db.name in before[2]
    for port, message in ((free_port(), f"error: {arena.db} is being served by another arena (process {arena.process.pid})"),
                          (arena.port, f"error: cannot listen on 127.0.0.1:{arena.port}")):
        done = subprocess.run([sys.executable, "-m", "arena", "serve", "--config", str(changed), "--db", str(arena.db),
                               "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1  # one line, not the web server's own error as well
        assert database() == before


def test_an_ipv6_host_may_come_in_brackets():
    """`--host [::1]` is how a URL writes it, and Gradio takes it so: the port check must too."""
    from arena.server import _can_listen

    port = free_port()
    assert _can_listen("[::1]", port) == _can_listen("::1", port)
    assert _can_listen("127.0.0.1", port) and not _can_listen("192.0.2.1", port)  # not this machine's: refused,
    # in the one line a taken port gets (test_a_port_that_is_taken_is_one_line)


@pytest.mark.parametrize("script", ["bogus", "after soon: echo", "after 1: ecko"])
def test_a_misspelled_script_fails_its_model_at_start_not_mid_battle(tmp_path, script):
    config = write_config(tmp_path, f"""
        models:
          - {{name: one, backend: scripted, script: echo}}
          - {{name: typo, backend: scripted, script: "{script}"}}
    """)
    with pytest.raises(ModelLoadError, match=rf"model 'typo' failed to load: unknown script '{script}'"):
        Roster(load_config(config)).load(report=lambda message: None)

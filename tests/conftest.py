"""Shared fixtures: real SQLite files, real configs, the real bundled model."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """A real vote file from ../shared/data. The project's CI always has it, so a missing one fails the test:
    a skipped test could never fail."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"real vote data not found at {path} (the shared/ folder beside the project)", pytrace=False)
    return path


T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.05) -> T:
    """Polls for what another thread or process does in its own time; returns the last value seen, so
    the caller's assert shows what there was when time ran out."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return value


def write_config(directory: Path, text: str, name: str = "models.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# Two models that answer at once, for tests that drive a real server hard.
FAST_MODELS = """
    settings: {sampling: uniform, limits: {battles_per_hour: 100000}}
    models:
      - {name: quick-one, backend: scripted, script: "reply: First."}
      - {name: quick-two, backend: scripted, script: "reply: Second."}
"""

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


def pytest_collection_modifyitems(items):
    """Files that load the real model first, then those that drive a browser, then the rest, each file whole.

    With several test processes (`make test`), the longest files start early and the quick ones fill the
    gaps at the end, instead of one long file running alone while the other processes sit idle.
    """
    def rank(item) -> int:
        return 0 if item.get_closest_marker("model") else 1 if item.get_closest_marker("browser") else 2

    file_rank: dict[Path, int] = {}
    for item in items:
        file_rank[item.path] = min(rank(item), file_rank.get(item.path, 2))
    items.sort(key=lambda item: file_rank[item.path])  # stable: each file keeps its order


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


MODEL_CACHE = ROOT / ".arena-cache"  # converted weights survive between test runs (gitignored)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningArena:
    """`python -m arena serve` in a child process, as an operator would start it."""

    def __init__(self, config: Path, db: Path, ready_timeout_s: float = 240, env: dict[str, str] | None = None,
                 ready_line: str = "Ready:", serve_args: tuple[str, ...] = ()):
        """Returns once the server prints `ready_line` ("Arena page:": the page is up, the models still loading)."""
        self.db = db
        self.ready_line = ready_line
        self.serve_args = serve_args
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # A free port can be taken by another test process's server before this one binds it: try another.
        for _ in range(3):
            if self._start(config, env, ready_timeout_s):
                return
        raise RuntimeError("arena found no free port:\n" + "".join(self.output))

    def _start(self, config: Path, env: dict[str, str], ready_timeout_s: float) -> bool:
        """Whether it became ready; raises if it failed for another reason than its port."""
        import subprocess
        import sys
        import threading
        import time

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "arena", "serve", "--config", str(config), "--db", str(self.db),
             "--port", str(self.port), "--cache-dir", str(MODEL_CACHE), *self.serve_args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith(self.ready_line):
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + ready_timeout_s
        while not ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                reader.join(5)  # its last lines say why
                if "cannot listen on" in "".join(self.output):
                    return False
                raise RuntimeError("arena did not start:\n" + "".join(self.output))
        return True

    def stop(self) -> None:
        self.stop_later()
        _reap(self.process)

    def stop_later(self) -> None:
        """Ask it to stop and go on: a stop takes a second or two, time a test that is over need not wait.
        Reaped at the end."""
        if self.process.poll() is None:
            self.process.terminate()
            _STOPPING.append(self.process)


_STOPPING: list = []  # servers told to stop, not yet waited for


def _reap(process) -> None:
    try:
        process.wait(20)
    except Exception:
        process.kill()
        process.wait()


def pytest_sessionfinish():
    for process in _STOPPING:
        _reap(process)


@pytest.fixture
def start_arena(tmp_path):
    arenas = []

    def start(config_text: str, db_name: str = "arena.db", env: dict[str, str] | None = None,
              ready_line: str = "Ready:", serve_args: tuple[str, ...] = ()) -> RunningArena:
        config = write_config(tmp_path, config_text, name=f"models-{len(arenas)}.yaml")
        arena = RunningArena(config, tmp_path / db_name, env=env, ready_line=ready_line, serve_args=serve_args)
        arenas.append(arena)
        return arena

    yield start
    for arena in arenas:
        arena.stop_later()


@pytest.fixture(scope="module")
def shared_arena(request, tmp_path_factory):
    """One server for a whole file, on the config its module names SHARED_ARENA.

    For tests that only need an arena to look at, not a fresh one: starting a server costs about 5 s
    (importing Gradio), a dozen of them a minute of the suite. Tests that depend on what others did there
    (votes on the leaderboard, rate limits, the whole database) keep `start_arena`; one that reads the
    database counts only its own rows.
    """
    directory = tmp_path_factory.mktemp("shared-arena")
    arena = RunningArena(write_config(directory, request.module.SHARED_ARENA), directory / "arena.db")
    yield arena
    arena.stop_later()


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def chromium():
    """One Chromium for the whole run (starting it costs about a second); each test gets a fresh context."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A page in a context of its own: no cookies, storage or cache shared with another test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1100})
    yield context.new_page()
    context.close()


def open_and_ask(page, url: str, text: str, key: str = "battle", tab: str | None = None) -> None:
    """Open the arena (on `tab`) and send a prompt from the `key` panel, as a volunteer would."""
    page.goto(url)
    if tab:
        page.get_by_role("tab", name=tab).click()
    prompt = page.locator(f"#{key}-prompt textarea")
    prompt.wait_for()
    prompt.fill(text)
    prompt.press("Enter")


def record_announcements(page) -> None:
    """Collect what the page's announcer says into `window.said` (it keeps nothing for long, so its words
    are caught as they come). The page's script adds the announcer after Gradio draws the page: wait for it."""
    page.locator("#arena-announcer").wait_for(state="attached")
    page.evaluate("""() => { window.said = []; const announcer = document.querySelector('#arena-announcer');
        new MutationObserver(() => { if (announcer.textContent) window.said.push(announcer.textContent); }).observe(
        announcer, {childList: true, characterData: true, subtree: true}); }""")

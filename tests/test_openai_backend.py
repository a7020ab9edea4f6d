"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1, never elsewhere.

Answers come from `transformers serve` running the bundled model (the same
protocol as vLLM); failures come from tiny local listeners that misbehave
on purpose, because a real server only times out or echoes keys by accident.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from arena.backends import GenerationError
from arena.backends.openai_compatible import NO_SUCH_ROUTE, OpenAICompatibleBackend
from arena.backends.transformers_local import TransformersBackend
from arena.battle import Mode, RuleViolation
from arena.config import GenerationSettings, ModelEntry, bundled_model_path
from arena.ui.battle_text import status_line
from tests.conftest import MODEL_CACHE, free_port

HOST = "127.0.0.1"
SERVER_LIFETIME_S = 300  # `transformers serve` exits by itself even if pytest is killed
GREEDY = GenerationSettings(max_new_tokens=20, temperature=0)
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
KEY_VARIABLE = "ARENA_TEST_REMOTE_KEY"


def remote_entry(base_url: str, model: str = "smollm2", **fields) -> ModelEntry:
    return ModelEntry(name="remote", backend="openai", base_url=base_url, model=model, **fields)


def loaded(entry: ModelEntry, reports: list[str] | None = None) -> OpenAICompatibleBackend:
    backend = OpenAICompatibleBackend(entry)
    backend.load((reports if reports is not None else []).append)
    return backend


def answer(backend: OpenAICompatibleBackend, settings: GenerationSettings = GREEDY, messages=CAPITAL):
    return list(backend.stream(messages, settings, threading.Event()))


@pytest.fixture(autouse=True)
def direct_connections(monkeypatch):
    """Every request here must go straight to 127.0.0.1, whatever proxy the machine is set up with."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# --- a real server ------------------------------------------------------------


def converted_bundled_model() -> Path:
    """The bundled GGUF as safetensors: the local backend's cold-start cache, written once and shared."""
    gguf = bundled_model_path("smollm2")
    local = TransformersBackend(ModelEntry(name="local", backend="transformers", source=str(gguf.parent), gguf_file=gguf.name),
                                cache_dir=MODEL_CACHE)
    weights = local._cache_path()
    if not (weights / "model.safetensors").is_file():
        local.load(lambda message: None)
        local.close()
    return weights


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`transformers serve` on 127.0.0.1 with the bundled model; yields (base_url, model id).

    The weights go in as a path relative to the cache (a short model id in
    messages); the hub cache is empty but must exist, or /v1/models answers 500.
    """
    weights = converted_bundled_model()
    model_id = f"./{weights.name}"
    home = tmp_path_factory.mktemp("serve")
    (home / "hub").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    # A free port can be taken by another test process's server before this one binds it: try another.
    for _ in range(3):
        port = free_port()
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model_id, "--host", HOST, "--port", str(port)]
        if shutil.which("timeout"):
            command = ["timeout", str(SERVER_LIFETIME_S), *command]
        log_path = home / "serve.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, cwd=weights.parent, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                if wait_until_healthy(f"http://{HOST}:{port}/health", process, log_path):
                    yield f"http://{HOST}:{port}/v1", model_id
                    return
            finally:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    raise RuntimeError(f"transformers serve found no free port:\n{log_path.read_text()[-3000:]}")


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, limit_s: float = 120) -> bool:
    """Whether it became healthy; False if its port was taken, raises if it failed for another reason."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    if process.poll() is not None and "address already in use" in log.read_text().lower():
        return False
    raise RuntimeError(f"transformers serve did not become healthy:\n{log.read_text()[-3000:]}")


@pytest.mark.model
def test_streams_a_coherent_answer_in_several_deltas(served):
    base_url, model_id = served
    reports: list[str] = []
    deltas = answer(loaded(remote_entry(base_url, model_id), reports))
    assert "Paris" in "".join(d.text for d in deltas)
    assert sum(1 for d in deltas if d.text) > 1  # it streamed, not one final blob
    assert 0 < sum(d.tokens for d in deltas) <= GREEDY.max_new_tokens
    assert any(base_url in r for r in reports)


@pytest.mark.model
def test_cancel_stops_the_answer_early(served):
    base_url, model_id = served
    backend = loaded(remote_entry(base_url, model_id))
    cancel = threading.Event()
    received, started = 0, time.monotonic()
    for delta in backend.stream([{"role": "user", "content": "Count from one to one hundred."}],
                                GenerationSettings(max_new_tokens=48, temperature=0), cancel):  # the server may finish it anyway
        received += delta.tokens
        cancel.set()
    assert received < 5 and time.monotonic() - started < 15
    assert "Paris" in "".join(d.text for d in answer(backend))  # the connection pool still works after the hang-up


@pytest.mark.model
def test_server_refusals_become_errors_with_the_status(served):
    base_url, model_id = served
    backend = loaded(remote_entry(base_url, model_id))
    with pytest.raises(GenerationError, match="HTTP 422.*repetition_penalty"):  # transformers serve is strict
        answer(backend, replace(GREEDY, repetition_penalty=1.3))


@pytest.mark.model
def test_a_model_the_real_server_does_not_serve_fails_load(served):
    """`transformers serve` lists nothing at /models; the one-token probe is what finds a wrong `model`."""
    base_url, model_id = served
    reports: list[str] = []
    loaded(remote_entry(base_url, model_id), reports)  # the right one: served on demand
    assert any(f"serves '{model_id}' on demand" in report for report in reports), reports
    with pytest.raises(GenerationError, match=r"does not serve 'no-such-model'.*HTTP 400"):
        loaded(remote_entry(base_url, "no-such-model"))


@pytest.mark.model
def test_a_base_url_without_v1_fails_load(served):
    base_url, model_id = served
    with pytest.raises(GenerationError, match=r"HTTP 404.*end in /v1"):
        loaded(remote_entry(base_url.removesuffix("/v1"), model_id))


@pytest.mark.model
def test_a_real_server_refuses_the_load_probe_without_generating(served):
    """Where /models is missing, load() probes /chat/completions with no messages: an API refuses it, but not as a missing route."""
    base_url, _ = served
    started = time.monotonic()
    probe = httpx.post(f"{base_url}/chat/completions", json={}, timeout=10, trust_env=False)
    assert probe.status_code >= 400 and probe.status_code not in NO_SUCH_ROUTE, probe.text  # transformers serve: 500
    assert time.monotonic() - started < 2


@pytest.mark.model
def test_a_battle_between_a_local_and_a_remote_model(served, make_service):
    base_url, model_id = served
    service = make_service(f"""
        settings: {{sampling: uniform, generation_timeout_s: 60}}
        models:
          - {{name: local-echo, backend: scripted, script: echo}}
          - name: remote-smollm
            backend: openai
            base_url: {base_url}
            model: "{model_id}"
            request_timeout_s: 30
            temperature: 0
            max_new_tokens: 16
    """)
    view = None
    for view in service.ask(None, "What is the capital of France?", "10.0.0.1", Mode.ANONYMOUS):
        pass
    assert view.votable and not view.failed, status_line(view)
    battle = service.store.battle(view.battle_id)
    remote_side = "a" if battle["model_a"] == "remote-smollm" else "b"
    assert "Paris" in view.conversations[remote_side][-1]["content"]
    service.vote(view.battle_id, "10.0.0.1", f"model_{remote_side}")
    (record,) = service.store.vote_records()
    assert record[f"model_{remote_side}"] == "remote-smollm" and record["winner"] == f"model_{remote_side}"


# --- local listeners that misbehave on purpose -----------------------------------

Reply = Callable[[BaseHTTPRequestHandler], tuple[int, str | Iterable[str]] | tuple[int, str, str] | None]


class Listener:
    """A throwaway HTTP endpoint on 127.0.0.1 that records requests and answers via `reply`.

    `reply` returns (status, body) or (status, body, content type), where a
    body given as pieces is written piece by piece until the client hangs up;
    or None to keep the client waiting. The request's JSON is `request.json`.
    """

    def __init__(self, reply: Reply):
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        self.hung_up = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self):
                listener.headers.append(dict(self.headers))
                self.json = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or "null")
                result = reply(self)
                if result is None:
                    listener.release.wait(30)
                    return
                status, body, *content_type = result
                self.send_response(status)
                json_body = isinstance(body, str) and body.startswith("{")
                self.send_header("Content-Type", (content_type or ["application/json" if json_body else "text/event-stream"])[0])
                if isinstance(body, str):
                    self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                try:
                    for piece in [body] if isinstance(body, str) else body:
                        self.wfile.write(piece.encode())
                        self.wfile.flush()
                except OSError:
                    listener.hung_up.set()

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://{HOST}:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listen():
    listeners: list[Listener] = []

    def start(reply: Reply) -> Listener:
        listeners.append(Listener(reply))
        return listeners[-1]

    yield start
    for listener in listeners:
        listener.close()


def no_model_listing_then(post: Reply) -> Reply:
    """Like llama.cpp's older servers: no /models, so load() cannot check the key or model up front.

    Like any real server, it refuses a request without messages (load's probe) before generating.
    """
    def reply(request):
        if request.command == "GET":
            return 404, '{"detail": "Not Found"}'
        if "messages" not in request.json:
            return 400, '{"error": {"message": "messages is required"}}'
        return post(request)

    return reply


def events(*chunks) -> str:
    return "".join(c if isinstance(c, str) else f"data: {json.dumps(c)}\n\n" for c in chunks)


def content(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_event_stream_dialects_are_read_alike(listen):
    stream = events(": keep-alive\n\n", {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                    content("Hel"), content("lo"), {"choices": [], "usage": {"completion_tokens": 3}},
                    "data: [DONE]\n\n", content(" ignored after DONE"))
    listener = listen(no_model_listing_then(lambda request: (200, stream)))
    deltas = answer(loaded(remote_entry(listener.url)))
    assert "".join(d.text for d in deltas) == "Hello"
    assert sum(d.tokens for d in deltas) == 3  # the server's usage count wins over one-per-chunk


def test_an_error_event_mid_answer_fails_the_answer(listen):
    stream = events(content("Half an"), {"error": {"message": "engine died", "code": 500}})
    listener = listen(no_model_listing_then(lambda request: (200, stream)))
    with pytest.raises(GenerationError, match="engine died"):
        answer(loaded(remote_entry(listener.url)))


def test_a_reply_that_is_not_an_event_stream_says_what_came_back(listen):
    login_page = "<html><body><form>Sign in to the proxy</form></body></html>"
    listener = listen(no_model_listing_then(lambda request: (200, login_page, "text/html; charset=utf-8")))
    with pytest.raises(GenerationError, match=r"expected an event stream \(text/event-stream\), got text/html: <html>.*Sign in"):
        answer(loaded(remote_entry(listener.url)))


def test_a_json_reply_that_is_no_chat_completion_says_what_came_back(listen):
    listener = listen(no_model_listing_then(lambda request: (200, '{"status": "queued", "id": 7}')))
    with pytest.raises(GenerationError, match=r"got application/json: \{\"status\": \"queued\""):
        answer(loaded(remote_entry(listener.url)))


def test_an_endpoint_that_ignores_stream_true_still_answers(listen):
    completion = {"object": "chat.completion", "usage": {"completion_tokens": 6},
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "A whole answer at once."}, "finish_reason": "stop"}]}
    listener = listen(no_model_listing_then(lambda request: (200, json.dumps(completion))))
    deltas = answer(loaded(remote_entry(listener.url)))
    assert "".join(d.text for d in deltas) == "A whole answer at once."
    assert sum(d.tokens for d in deltas) == 6


def cut_for_length(*chunks) -> str:
    """Few chunks of many tokens each, then finish_reason "length" (`usage` only if given)."""
    return events(*chunks, {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}, "data: [DONE]\n\n")


@pytest.mark.parametrize("stream, tokens, cut", [
    (cut_for_length(content("word " * 10), content("word " * 10)), 2, True),  # no usage: a token per chunk
    (cut_for_length(content("word " * 30), {"choices": [], "usage": {"completion_tokens": 30}}), 30, True),  # usage wins
    (events(content("word " * 30), {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "data: [DONE]\n\n"), 1, False),
])
def test_an_answer_cut_for_length_says_so_and_keeps_its_token_count(listen, stream, tokens, cut):
    """A cut answer is told by finish_reason, never by inflating its tokens to max_new_tokens."""
    listener = listen(no_model_listing_then(lambda request: (200, stream)))
    deltas = answer(loaded(remote_entry(listener.url)))
    assert sum(d.tokens for d in deltas) == tokens
    assert any(d.cut for d in deltas) is cut


def test_a_battle_says_a_remote_answer_was_cut(listen, make_service):
    stream = cut_for_length(content("word " * 10), content("word " * 10))
    listener = listen(no_model_listing_then(lambda request: (200, stream)))
    service = make_service(f"""
        settings: {{sampling: uniform, generation_timeout_s: 10}}
        models:
          - {{name: local-echo, backend: scripted, script: echo}}
          - {{name: remote-wordy, backend: openai, base_url: "{listener.url}", model: wordy, max_new_tokens: 64}}
    """)
    view = None
    for view in service.ask(None, "Say many words.", "10.0.0.1", Mode.ANONYMOUS):
        pass
    assert view.votable and "cut at the length limit" in status_line(view), status_line(view)


def test_an_arena_of_remote_models_only_still_has_an_hourly_prompt_budget(listen, make_service):
    """No served model can count the tokens there: a guess from the text's length stands in, or one address could
    have a paid endpoint read without end."""
    listener = listen(no_model_listing_then(lambda request: (200, events(content("Fine."), "data: [DONE]\n\n"))))
    service = make_service(f"""
        settings: {{sampling: uniform, limits: {{prompt_tokens_per_hour: 100}}}}
        models:
          - {{name: remote-one, backend: openai, base_url: "{listener.url}", model: one}}
          - {{name: remote-two, backend: openai, base_url: "{listener.url}", model: two}}
    """)
    prompt = "Tell me about it " * 10  # 170 bytes: a guess of 57 tokens
    for _ in service.ask(None, prompt, "10.0.0.1", Mode.ANONYMOUS):
        pass
    with pytest.raises(RuleViolation, match=r"reached the limit here: 100 prompt tokens an hour"):
        service.ask(None, prompt, "10.0.0.1", Mode.ANONYMOUS)
    for _ in service.ask(None, prompt, "10.0.0.2", Mode.ANONYMOUS):  # another address has its own budget
        pass


def test_a_remote_model_s_reading_is_guessed_for_the_budget_even_beside_a_model_that_counts(listen, make_service):
    """Side by side with a local model, whose count (a token a word for the scripted one) would let the remote one
    read a long prompt for next to nothing."""
    listener = listen(no_model_listing_then(lambda request: (200, events(content("Fine."), "data: [DONE]\n\n"))))
    service = make_service(f"""
        settings: {{sampling: uniform, limits: {{prompt_tokens_per_hour: 100}}}}
        models:
          - {{name: local-echo, backend: scripted, script: echo}}
          - {{name: remote-one, backend: openai, base_url: "{listener.url}", model: one}}
    """)
    pair, one_long_word = ("local-echo", "remote-one"), "x" * 170  # 1 token for local-echo, a guess of 57 remotely
    for _ in service.ask(None, one_long_word, "10.0.0.1", Mode.NAMED, pair):
        pass
    with pytest.raises(RuleViolation, match=r"reached the limit here: 100 prompt tokens an hour"):
        service.ask(None, one_long_word, "10.0.0.1", Mode.NAMED, pair)


def test_half_a_character_in_a_remote_answer_is_stored_as_a_replacement(listen, make_service):
    """JSON may escape a lone surrogate; SQLite and the page take only valid UTF-8."""
    stream = events('data: {"choices": [{"index": 0, "delta": {"content": "broken \\ud83d emoji"}}]}\n\n', "data: [DONE]\n\n")
    listener = listen(no_model_listing_then(lambda request: (200, stream)))
    service = make_service(f"""
        settings: {{sampling: uniform, generation_timeout_s: 10}}
        models:
          - {{name: local-echo, backend: scripted, script: echo}}
          - {{name: remote-broken, backend: openai, base_url: "{listener.url}", model: broken}}
    """)
    view = None
    for view in service.ask(None, "Say something.", "10.0.0.1", Mode.ANONYMOUS):
        pass
    assert view.votable, status_line(view)
    stored = [m["content"] for m in service.store.db["messages"].rows if m["role"] == "assistant"]
    assert "broken \ufffd emoji" in stored


@pytest.mark.parametrize("chunk, problem", [
    ({"choices": ["oops"]}, r"choices\[0\] is not an object"),
    ({"choices": {"0": {}}}, "choices is not a list"),
    ({"choices": [{"index": 0, "delta": "text"}]}, r"choices\[0\]\.delta is not an object"),
    ({"choices": [{"index": 0, "delta": {"content": ["te", "xt"]}}]}, r"choices\[0\]\.delta\.content is not a string"),
    ({"choices": [], "usage": [1, 2]}, "usage is not an object"),
])
def test_a_malformed_event_fails_the_answer_readably(listen, chunk, problem):
    stream = events(content("ok "), chunk, "data: [DONE]\n\n")
    listener = listen(no_model_listing_then(lambda request: (200, stream)))
    with pytest.raises(GenerationError, match=f"sent a malformed event: {problem}"):
        answer(loaded(remote_entry(listener.url)))


def test_a_web_server_that_is_no_openai_api_fails_load(listen):
    """An ordinary site, or a base_url missing /v1, must not start "ready" and then fail every battle."""
    listener = listen(lambda request: (404, "<html><body>Not Found</body></html>", "text/html"))
    with pytest.raises(GenerationError, match=r"not an OpenAI-compatible API.*HTTP 404.*end in /v1"):
        loaded(remote_entry(listener.url.removesuffix("/v1")))
    assert len(listener.headers) == 2  # /models, then the probe: nothing was generated


def test_a_server_without_a_model_listing_loads_with_a_warning(listen):
    listener = listen(no_model_listing_then(lambda request: (200, events(content("Hi"), "data: [DONE]\n\n"))))
    reports: list[str] = []
    backend = loaded(remote_entry(listener.url), reports)
    assert any(r.startswith("warning:") and "no /models" in r for r in reports), reports
    assert "".join(d.text for d in answer(backend)) == "Hi"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_fails_load_even_without_a_model_listing(listen, monkeypatch, status):
    """Servers check the key before the body, so load's probe is where a wrong key shows, not the first battle."""
    monkeypatch.setenv(KEY_VARIABLE, "sk-wrong")
    listener = listen(lambda request: (404, '{"detail": "Not Found"}') if request.command == "GET"
                      else (status, '{"error": {"message": "invalid api key"}}'))
    with pytest.raises(GenerationError, match=rf"refused the key in {KEY_VARIABLE}: HTTP {status}"):
        loaded(remote_entry(listener.url, api_key_env=KEY_VARIABLE))


def test_cancel_hangs_up_on_the_server_at_once(listen):
    def endless(request):
        def ticks():
            for _ in range(200):  # 10 s at most, should the client never hang up
                time.sleep(0.05)
                yield events(content(" tick"))

        return 200, ticks()

    listener = listen(no_model_listing_then(endless))
    cancel = threading.Event()
    for _ in loaded(remote_entry(listener.url)).stream(CAPITAL, GREEDY, cancel):
        cancel.set()
        cancelled = time.monotonic()
    assert listener.hung_up.wait(2) and time.monotonic() - cancelled < 1  # the server may stop generating


def test_nothing_listening_fails_fast():
    started = time.monotonic()
    with pytest.raises(GenerationError, match="cannot connect"):
        loaded(remote_entry(f"http://{HOST}:{free_port()}/v1", request_timeout_s=10))
    assert time.monotonic() - started < 2


def test_a_server_that_never_answers_times_out(listen):
    with socket.create_server((HOST, 0)) as silent:  # the kernel accepts connections; nobody reads them
        started = time.monotonic()
        with pytest.raises(GenerationError, match=r"did not answer within 1 s"):
            loaded(remote_entry(f"http://{HOST}:{silent.getsockname()[1]}/v1", request_timeout_s=1))
        assert time.monotonic() - started < 3
    listener = listen(no_model_listing_then(lambda request: None))  # stalls once asked for an answer
    backend = loaded(remote_entry(listener.url, request_timeout_s=1))
    started = time.monotonic()
    with pytest.raises(GenerationError, match=r"did not answer within 1 s"):
        answer(backend)
    assert time.monotonic() - started < 3


def test_a_missing_key_variable_is_named_before_any_request(listen, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    listener = listen(lambda request: (200, '{"data": []}'))
    with pytest.raises(GenerationError, match=KEY_VARIABLE):
        loaded(remote_entry(listener.url, api_key_env=KEY_VARIABLE))
    assert listener.headers == []


def test_the_key_is_sent_as_a_bearer_token_and_never_shown(listen, monkeypatch):
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_VARIABLE, key)
    echo = lambda request: (401, json.dumps({"error": f"invalid key {request.headers['Authorization']}"}))  # noqa: E731
    listener = listen(no_model_listing_then(echo))
    backend = loaded(remote_entry(listener.url, api_key_env=KEY_VARIABLE))
    with pytest.raises(GenerationError) as refused:
        answer(backend)
    assert "HTTP 401" in str(refused.value) and KEY_VARIABLE in str(refused.value)
    assert key not in str(refused.value) and "[API key]" in str(refused.value)
    assert [h.get("Authorization") for h in listener.headers] == [f"Bearer {key}"] * 3  # /models, load's probe, the answer


def test_a_stream_cut_off_mid_answer_fails_it_rather_than_passing_it_as_complete(listen):
    """The server died, or a proxy hung up: the body ends with neither a finish_reason nor [DONE]."""
    listener = listen(no_model_listing_then(lambda request: (200, events(content("This is a"), content(" fake")))))
    with pytest.raises(GenerationError, match=r"ended the answer's stream early.*closed the connection mid-answer"):
        answer(loaded(remote_entry(listener.url)))
    finished = listen(no_model_listing_then(lambda request: (200, events(
        content("Done."), {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))))  # no [DONE]: fine
    assert "".join(d.text for d in answer(loaded(remote_entry(finished.url)))) == "Done."


def test_a_server_that_ignores_max_tokens_is_cut_off_at_the_limit(listen):
    def endless(request):
        def words():
            for index in range(2000):
                yield events(content(f" w{index}"))

        return 200, words()

    listener = listen(no_model_listing_then(endless))
    deltas = answer(loaded(remote_entry(listener.url)), GenerationSettings(max_new_tokens=16, temperature=0))
    assert sum(d.tokens for d in deltas) == 16 and any(d.cut for d in deltas)
    assert listener.hung_up.wait(2)  # it stopped listening instead of reading all 2,000


@pytest.mark.parametrize("status, outcome", [(401, r"refused a request without an API key"), (503, None)])
def test_a_probe_refused_for_another_reason_does_not_blame_the_model(listen, status, outcome):
    """A guarded chat route is the key's fault; a busy or loading server may serve the model later."""
    listener = listen(lambda request: (200, '{"data": [{"id": "other"}]}') if request.command == "GET"
                      else (status, '{"error": {"message": "not now"}}'))
    reports: list[str] = []
    if outcome:
        with pytest.raises(GenerationError, match=outcome):
            loaded(remote_entry(listener.url, model="fake-model"), reports)
    else:
        loaded(remote_entry(listener.url, model="fake-model"), reports)
        assert any(r.startswith("warning:") and "HTTP 503" in r for r in reports), reports


@pytest.mark.parametrize("on_demand", [False, True])
def test_a_model_the_listing_leaves_out_is_asked_for_one_token_at_load(listen, on_demand):
    """A typo in `model` fails load with the listing, not every battle; a server that loads on demand passes."""
    def reply(request):
        if request.command == "GET":
            return 200, '{"data": [{"id": "fake-model"}]}'
        if request.json.get("model") == "fake-model" or on_demand:
            return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]})
        return 404, '{"error": {"message": "model fake-modle not found"}}'

    listener = listen(reply)
    entry = remote_entry(listener.url, model="fake-modle")
    if on_demand:
        reports: list[str] = []
        loaded(entry, reports)
        assert any("serves 'fake-modle' on demand" in r for r in reports), reports
    else:
        with pytest.raises(GenerationError, match=r"does not serve 'fake-modle' \(its /models lists fake-model.*HTTP 404"):
            loaded(entry)


def test_a_server_error_names_the_status_and_the_model(listen):
    """With several remote models on one server, the log must say which one failed."""
    listener = listen(no_model_listing_then(lambda request: (500, '{"error": {"message": "CUDA out of memory"}}')))
    with pytest.raises(GenerationError) as failed:
        answer(loaded(remote_entry(listener.url, model="fake-model")))
    assert f"{listener.url} answered: HTTP 500 for model 'fake-model'" in str(failed.value)
    assert "CUDA out of memory" in str(failed.value)


def test_the_request_asks_for_the_model_s_sampling_settings(listen):
    bodies: list[dict] = []

    def record(request):
        bodies.append(request.json)
        return 200, events(content("Hi"), "data: [DONE]\n\n")

    listener = listen(no_model_listing_then(record))
    answer(loaded(remote_entry(listener.url, model="fake-model")),
           GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.9))
    body = bodies[-1]
    assert body["model"] == "fake-model" and body["messages"] == CAPITAL and body["stream"] is True
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 16)
    assert "repetition_penalty" not in body  # 1.0 is no penalty; strict servers refuse the field

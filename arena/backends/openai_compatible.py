"""Models behind an OpenAI-compatible HTTP endpoint (vLLM, TGI, Ollama, llama.cpp, hosted APIs).

They all speak the same streaming dialect (`POST /chat/completions` answered
with server-sent events), so one code path serves them all. Only httpx is
needed: an arena of remote models never imports torch.

Servers differ in what they leave out, so the reply is read leniently: an
answer cut by `max_tokens` is known by `finish_reason: "length"`, tokens are
counted by `usage` where it is sent (a chunk each otherwise), and an endpoint
that ignores `stream: true` and sends one whole completion is still understood. What is not a chat completion at all (a
proxy's login page, a web server that is not the API) fails with what came back.

`repetition_penalty` is not part of the OpenAI API; it is sent only when it
differs from 1.0. vLLM honours it, some servers ignore it, and strict ones
(`transformers serve`) refuse the request with HTTP 422: leave it at 1.0 there.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from arena.backends.base import Backend, Delta, GenerationError, Message, ProgressReport
from arena.config import GenerationSettings, ModelEntry

EXCERPT_CHARS = 200
EVENT_STREAM = "text/event-stream"
NO_SUCH_ROUTE = (404, 405, 501)  # what web servers answer a POST to a path they do not serve
UNKNOWN_MODEL = (400, 404, 422)  # what APIs answer a request naming a model they do not serve


class OpenAICompatibleBackend(Backend):
    def __init__(self, entry: ModelEntry, *, cache_dir: Path | None = None):
        super().__init__(entry, cache_dir=cache_dir)
        self.base_url = (entry.base_url or "").rstrip("/")
        self.api_key: str | None = None
        self.client: httpx.Client | None = None

    loads_quickly = True

    @staticmethod
    def preflight_problem(entry: ModelEntry) -> str | None:
        if entry.api_key_env and not os.environ.get(entry.api_key_env, "").strip():
            return f"the environment variable {entry.api_key_env} is not set; it must hold the API key for {entry.base_url}"
        return None

    @staticmethod
    def sharing_key(entry: ModelEntry) -> Hashable:
        # The key variable and timeout belong to the connection, so entries
        # that differ in them must not share one.
        return ("openai", (entry.base_url or "").rstrip("/"), entry.model, entry.api_key_env, entry.request_timeout_s)

    def load(self, report: ProgressReport) -> None:
        headers = {}
        problem = self.preflight_problem(self.entry)
        if problem:
            raise GenerationError(problem)
        if self.entry.api_key_env:
            self.api_key = os.environ[self.entry.api_key_env].strip()  # a stray newline is never part of a key
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(self.entry.request_timeout_s))
        report(f"checking {self.base_url}/models")
        with self._translated_errors():
            response = self.client.get("/models")
        if response.status_code == 404:
            self._check_chat_route(report)
            return
        self._raise_for_status(response)
        served = _listed_models(response)
        if self.entry.model in served:
            report(f"{self.base_url} serves '{self.entry.model}'")
        else:
            self._check_unlisted_model(served, report)

    def stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event,
               group: Hashable | None = None) -> Iterator[Delta]:
        if self.client is None:
            raise GenerationError("the endpoint is not loaded")
        if cancel.is_set():
            return
        with self._translated_errors(cancel):
            with self.client.stream("POST", "/chat/completions", json=self._request_body(messages, settings)) as response:
                streamed = _media_type(response) == EVENT_STREAM
                if response.status_code >= 400 or not streamed:
                    response.read()
                self._raise_for_status(response)
                chunks = self._events(response, cancel) if streamed else [self._whole_completion(response)]
                yield from self._deltas(chunks, settings, cancel)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # --- protocol ---------------------------------------------------------

    def _request_body(self, messages: list[Message], settings: GenerationSettings) -> dict:
        body = {
            "model": self.entry.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,  # 0 asks the server for greedy decoding
            "top_p": settings.top_p,
        }
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty
        return body

    def _deltas(self, chunks: Iterable[dict], settings: GenerationSettings, cancel: threading.Event) -> Iterator[Delta]:
        """Turn completion chunks into deltas, one token per content chunk until `usage` says better.

        A chunk may hold many tokens, so the token count cannot tell a cut
        answer; `finish_reason: "length"` can, whether `max_tokens` or the
        model's context window did the cutting. A chunk holds at least one token,
        so text beyond `max_new_tokens` chunks means the server ignores the limit: the
        answer is cut there, or it would hold a battle for as long as the server streams.
        """
        counted, cut = 0, False
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text and counted >= settings.max_new_tokens:  # a server that ignores max_tokens: stop listening
                    yield Delta("", 0, cut=True)
                    return
                if text:
                    counted += 1
                    yield Delta(text, 1)
                cut = cut or choice.get("finish_reason") == "length"
            completion_tokens = (chunk.get("usage") or {}).get("completion_tokens")
            if isinstance(completion_tokens, int) and completion_tokens > counted:
                yield Delta("", completion_tokens - counted)
                counted = completion_tokens
        if cut and not cancel.is_set():
            yield Delta("", 0, cut=True)

    def _events(self, response: httpx.Response, cancel: threading.Event) -> Iterator[dict]:
        """The chunks of an event stream, until `[DONE]`, the end of the body or `cancel`.

        A body that ends with neither `[DONE]` nor a `finish_reason` was cut off (the server died or
        a proxy hung up): that answer is unfinished, and judging it as complete would be unfair to it.
        """
        finished = False
        for line in response.iter_lines():
            if cancel.is_set():
                return  # leaving the `with` closes the response, which tells the server to stop
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping") and `event:` lines
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            chunk = self._parse_chunk(data)
            finished = finished or any(choice.get("finish_reason") for choice in chunk.get("choices") or [])
            yield chunk
        if not finished and not cancel.is_set():
            raise self._error(f"{self.base_url} ended the answer's stream early, with neither a finish_reason nor "
                              "[DONE]: the server or a proxy closed the connection mid-answer")

    def _parse_chunk(self, data: str) -> dict:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise self._error(f"{self.base_url} sent a malformed event: {self._excerpt(data)}")
        if chunk.get("error"):
            raise self._error(f"{self.base_url} failed mid-answer: {self._excerpt(json.dumps(chunk['error']))}")
        flaw = _chunk_flaw(chunk)
        if flaw:
            raise self._error(f"{self.base_url} sent a malformed event: {flaw}: {self._excerpt(data)}")
        return chunk

    def _whole_completion(self, response: httpx.Response) -> dict:
        """The chunk equivalent of a reply that is not an event stream, if it is a whole chat completion.

        Some servers and proxies ignore `stream: true` and send the finished
        answer as JSON; anything else (a login page, another API) is an error
        that quotes what came back.
        """
        try:
            completion = response.json()
        except ValueError:
            completion = None
        choices = completion.get("choices") if isinstance(completion, dict) else None
        whole = isinstance(choices, list) and choices and all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices)
        if whole:
            chunk = {"choices": [{"delta": c["message"], "finish_reason": c.get("finish_reason")} for c in choices],
                     "usage": completion.get("usage")}
            if not _chunk_flaw(chunk):
                return chunk
        received = _media_type(response) or "no content type"
        raise self._error(f"{self.base_url} did not stream: expected an event stream ({EVENT_STREAM}), "
                          f"got {received}: {self._excerpt(response.text)}")

    def _check_unlisted_model(self, served: set[str], report: ProgressReport) -> None:
        """A model the listing leaves out: ask it for one token, so a typo fails load and not every battle.

        Some servers load models on demand and list only the ones loaded; they answer the probe.
        """
        listed = ", ".join(sorted(served)[:10]) or "nothing"
        report(f"{self.base_url} does not list '{self.entry.model}' (it lists {listed}); asking it for one token")
        probe = {"model": self.entry.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "stream": False}
        with self._translated_errors():
            response = self.client.post("/chat/completions", json=probe)
        if response.status_code < 400:
            report(f"{self.base_url} serves '{self.entry.model}' on demand")
        elif response.status_code in UNKNOWN_MODEL:
            raise self._error(f"{self.base_url} does not serve '{self.entry.model}' (its /models lists {listed}; asked for "
                              f"one token, it answered HTTP {response.status_code}: {self._excerpt(response.text)}); check `model`")
        elif response.status_code in (401, 403):
            self._raise_for_status(response)  # the key, not the model
        else:  # busy (429) or still loading it (503): it may well serve it once battles come
            report(f"warning: {self.base_url} answered HTTP {response.status_code} when asked for '{self.entry.model}': "
                   f"{self._excerpt(response.text)}; whether it serves it is known at the first battle")

    def _check_chat_route(self, report: ProgressReport) -> None:
        """Without a /models listing, make sure chat completions are served here before claiming to be ready.

        The probe holds no messages, so an API refuses it (400, 422, even 500)
        without generating; an ordinary web server, or a base_url missing
        /v1, has no such route.
        """
        report(f"{self.base_url} has no /models listing; checking that it serves /chat/completions")
        with self._translated_errors():
            with self.client.stream("POST", "/chat/completions", json={}) as probe:  # the body is read only if refused
                if probe.status_code in (401, 403):  # a route that exists, but the key is wrong or missing
                    probe.read()
                    self._raise_for_status(probe)
                if probe.status_code in NO_SUCH_ROUTE:
                    probe.read()
                    raise self._error(
                        f"{self.base_url} is not an OpenAI-compatible API: /models answered HTTP 404 and /chat/completions "
                        f"HTTP {probe.status_code}: {self._excerpt(probe.text)}; base_url should end in /v1 (or the "
                        "server's API prefix), e.g. http://HOST:8000/v1"
                    )
        report(f"warning: {self.base_url} has no /models listing; whether it serves '{self.entry.model}' "
               "is known only at the first battle")

    # --- errors -----------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        if response.status_code in (401, 403):
            source = f"the key in {self.entry.api_key_env}" if self.entry.api_key_env else "a request without an API key (set api_key_env)"
            cause = f"refused {source}"
        else:
            cause = "answered"
        raise self._error(f"{self.base_url} {cause}: HTTP {response.status_code} for model '{self.entry.model}': {self._excerpt(response.text)}")

    @contextmanager
    def _translated_errors(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """Turn httpx failures into messages an operator can act on."""
        try:
            yield
        except httpx.HTTPError as exc:
            if cancel is not None and cancel.is_set():
                return  # the connection dropped because we stopped listening
            if isinstance(exc, httpx.TimeoutException):
                message = f"{self.base_url} did not answer within {self.entry.request_timeout_s:g} s (request_timeout_s)"
            elif isinstance(exc, httpx.ConnectError):
                message = f"cannot connect to {self.base_url}: {exc}"
            else:
                message = f"the connection to {self.base_url} failed: {type(exc).__name__}: {exc}"
            raise self._error(message) from exc

    def _error(self, message: str) -> GenerationError:
        return GenerationError(self._hide_key(message))

    def _excerpt(self, text: str) -> str:
        """A short one-line quote of what the server said; the key is hidden before cutting."""
        flat = re.sub(r"\s+", " ", self._hide_key(text)).strip()
        return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…"

    def _hide_key(self, text: str) -> str:
        """Servers sometimes echo the key they refused; it must never reach a log or a page."""
        return text.replace(self.api_key, "[API key]") if self.api_key else text


def _media_type(response: httpx.Response) -> str:
    """`text/event-stream` from `Text/Event-Stream; charset=utf-8`."""
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _chunk_flaw(chunk: dict) -> str | None:
    """What in a completion chunk does not have the shape the API promises, or None."""
    choices = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        return "choices is not a list"
    for index, choice in enumerate(choices or []):
        if not isinstance(choice, dict):
            return f"choices[{index}] is not an object"
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            return f"choices[{index}].delta is not an object"
        if delta and delta.get("content") is not None and not isinstance(delta["content"], str):
            return f"choices[{index}].delta.content is not a string"
    if chunk.get("usage") is not None and not isinstance(chunk["usage"], dict):
        return "usage is not an object"
    return None


def _listed_models(response: httpx.Response) -> set[str]:
    try:
        listing = response.json()
    except ValueError:
        return set()
    entries = listing.get("data") if isinstance(listing, dict) else None
    return {e["id"] for e in entries or [] if isinstance(e, dict) and isinstance(e.get("id"), str)}


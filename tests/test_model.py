"""The real bundled SmolLM2 through the transformers backend: no fakes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

from arena.backends.transformers_local import TransformersBackend
from arena.backends.base import GenerationError
from arena.config import GenerationSettings, ModelEntry, load_config
from arena.roster import Roster
from tests.conftest import write_config

pytestmark = pytest.mark.model

TWO_PERSONALITIES = """
    models:
      - name: terse
        backend: transformers
        source: bundled:smollm2
        system_prompt: Answer in one short sentence.
        temperature: 0
        max_new_tokens: 12
      - name: chatty
        backend: transformers
        source: bundled:smollm2
        temperature: 0.8
        max_new_tokens: 12
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    config = load_config(write_config(directory, TWO_PERSONALITIES))
    roster = Roster(config, cache_dir=directory / "cache")
    messages = []
    roster.load(report=messages.append)
    yield roster, directory, messages
    roster.close()


def test_entries_on_the_same_weights_share_one_loaded_copy(loaded):
    roster, _, messages = loaded
    terse, chatty = roster.contestants["terse"], roster.contestants["chatty"]
    assert terse.backend is chatty.backend
    assert any("dequantising GGUF" in m for m in messages)  # progress was reported


def test_bundled_model_answers_through_its_chat_template(loaded):
    roster, _, _ = loaded
    deltas = list(roster.contestants["terse"].stream([{"role": "user", "content": "What is the capital of France?"}], threading.Event()))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text
    assert 0 < sum(d.tokens for d in deltas) <= 12
    assert len(deltas) > 1  # it streamed, not one final blob


def test_an_answer_is_cut_only_when_it_hits_max_new_tokens(loaded):
    roster, _, _ = loaded
    backend = roster.contestants["terse"].backend
    chat = [{"role": "user", "content": "What is the capital of France? One word."}]
    whole = list(backend.stream(chat, GenerationSettings(max_new_tokens=40, temperature=0), threading.Event()))
    spent = sum(d.tokens for d in whole)
    assert spent < 40 and not any(d.cut for d in whole)  # it ended with its own stop token
    cut = list(backend.stream(chat, GenerationSettings(max_new_tokens=spent - 1, temperature=0), threading.Event()))
    assert sum(d.tokens for d in cut) == spent - 1 and cut[-1].cut
    # Ending with its own stop token exactly at the limit is a whole answer, not a cut one.
    exact = list(backend.stream(chat, GenerationSettings(max_new_tokens=spent, temperature=0), threading.Event()))
    assert sum(d.tokens for d in exact) == spent and not any(d.cut for d in exact)


def test_cancel_stops_generation_early(loaded):
    roster, _, _ = loaded
    backend = roster.contestants["chatty"].backend
    cancel = threading.Event()
    received = 0
    for delta in backend.stream([{"role": "user", "content": "Count from one to one hundred."}],
                                GenerationSettings(max_new_tokens=200, temperature=0), cancel):
        received += delta.tokens
        cancel.set()
    assert received < 20


def test_converted_weights_are_cached_and_give_the_same_answer(loaded):
    roster, directory, _ = loaded
    cached = list((directory / "cache").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    entry = roster.contestants["terse"].entry
    again = TransformersBackend(entry, cache_dir=directory / "cache")
    reports = []
    again.load(reports.append)
    assert any("cached conversion" in r for r in reports)
    prompt = [{"role": "user", "content": "Name a colour."}]
    greedy = GenerationSettings(max_new_tokens=8, temperature=0)
    first = "".join(d.text for d in roster.contestants["terse"].backend.stream(prompt, greedy, threading.Event()))
    second = "".join(d.text for d in again.stream(prompt, greedy, threading.Event()))
    assert first == second and first.strip()


def test_a_conversion_another_start_cached_first_is_kept_without_a_complaint(loaded, tmp_path):
    """Two arenas (or test workers) starting at once on one cache both convert; the later one finds the
    earlier one's copy in place, and leaves no half-written folder beside it."""
    backend = loaded[0].contestants["terse"].backend
    conversion = tmp_path / "conversion"
    reports = [[], []]
    for said in reports:
        backend._write_conversion(conversion, said.append)
    assert reports == [[f"cached converted weights in {conversion}"], []]
    assert [path.name for path in tmp_path.iterdir()] == ["conversion"]
    assert (conversion / "model.safetensors").is_file()


def test_more_new_tokens_than_the_model_can_read_is_caught_once_loaded(loaded):
    backend = loaded[0].contestants["terse"].backend
    assert backend.settings_problem(GenerationSettings(max_new_tokens=12)) is None
    problem = backend.settings_problem(GenerationSettings(max_new_tokens=10000))
    assert problem and "max_new_tokens is 10000" in problem and "8192" in problem


def test_a_conversation_leaving_no_room_for_the_answer_is_refused_before_decoding(loaded):
    """The prompt and the answer it may grow into must both fit the model's context, not the prompt alone."""
    backend = loaded[0].contestants["terse"].backend
    chat = [{"role": "user", "content": "word " * 4000}]
    room = backend.context_length() - backend.prompt_tokens(chat)
    assert 10 < room < 8192  # the prompt fits, with room to spare
    with pytest.raises(GenerationError, match="too long for this model"):
        next(backend.stream(chat, GenerationSettings(max_new_tokens=room + 1, temperature=0), threading.Event()))


def test_entries_differing_only_in_dtype_load_separate_weights():
    same = dict(name="x", backend="transformers", source="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (TransformersBackend.sharing_key(ModelEntry(**same, dtype="float32"))
            != TransformersBackend.sharing_key(ModelEntry(**same, dtype="bfloat16")))
    assert (TransformersBackend.sharing_key(ModelEntry(**same, dtype="float32"))
            == TransformersBackend.sharing_key(ModelEntry(**{**same, "name": "y"}, dtype="float32")))


HUB_LOADER = textwrap.dedent("""
    import json, sys, threading
    from huggingface_hub import constants
    from arena.backends.base import GenerationError
    from arena.backends.transformers_local import TransformersBackend
    from arena.config import GenerationSettings, load_config

    config = load_config(sys.argv[1])
    outcome = {}
    for entry in config.models:
        reports = []
        backend = TransformersBackend(entry)
        try:
            backend.load(reports.append)
        except GenerationError as exc:
            outcome[entry.name] = {"error": str(exc), "reports": reports}
            continue
        chat = [{"role": "user", "content": "What is the capital of France?"}]
        deltas = backend.stream(chat, GenerationSettings(max_new_tokens=12, temperature=0), threading.Event())
        outcome[entry.name] = {"answer": "".join(d.text for d in deltas), "reports": reports}
    print(json.dumps(outcome))
""")


@pytest.mark.parametrize("offline_flag", ["1", "0"])
def test_a_hub_id_loads_from_the_local_cache_and_an_unknown_one_fails_naming_it(loaded, tmp_path, offline_flag):
    """The hub path itself, without a download: a snapshot laid out as huggingface_hub keeps one.

    With HF_HUB_OFFLINE=0 on this machine the hub cannot be reached: the cached
    model must still load, and the uncached one fail at once with the reason.
    """
    _, directory, _ = loaded
    converted = next((directory / "cache").iterdir())
    repo = tmp_path / "hub" / "models--arena-tests--smollm2"
    revision = "0" * 40
    shutil.copytree(converted, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    config = write_config(tmp_path, """
        models:
          - {name: cached, backend: transformers, source: arena-tests/smollm2}
          - {name: absent, backend: transformers, source: arena-tests/no-such-model}
    """)
    environment = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": offline_flag}
    finished = subprocess.run([sys.executable, "-c", HUB_LOADER, str(config)], env=environment,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    outcome = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "Paris" in outcome["cached"].get("answer", ""), outcome["cached"]
    assert any(f"from the local Hugging Face cache ({tmp_path / 'hub'})" in r for r in outcome["cached"]["reports"])
    failure = outcome["absent"]["error"]
    if offline_flag == "1":
        assert failure.startswith("hub model 'arena-tests/no-such-model' is not in the local Hugging Face cache")
        assert "HF_HUB_OFFLINE is set" in failure
    elif "cannot reach" in failure:  # this machine: no network
        assert "'arena-tests/no-such-model' is not in the local Hugging Face cache" in failure
    else:  # with a network, the hub answers that the id does not exist
        assert failure.startswith("no model 'arena-tests/no-such-model' on the Hugging Face hub")

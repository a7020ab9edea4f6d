"""models.yaml validation: the shipped file, and each kind of bad file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arena.config import ConfigError, load_config, parse_config
from tests.conftest import ROOT, write_config

GOOD_ENTRY = "{name: one, backend: scripted, script: echo}"


def test_shipped_config_is_valid_and_offline():
    config = load_config(ROOT / "models.yaml")
    enabled = config.enabled_models
    assert len(enabled) >= 3
    assert all(m.backend == "transformers" and m.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" for m in enabled)
    # Contestants must differ visibly: in decoding settings or system prompt.
    assert len({(m.system_prompt, m.generation) for m in enabled}) == len(enabled)


def problems_of(tmp_path, text):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text))
    return caught.value


@pytest.mark.parametrize(
    "models, entry, field",
    [
        ("- {name: one, backend: scripted, script: echo, colour: red}", "model 'one'", "colour"),
        ("- {backend: scripted, script: echo}", "models[3]", "name"),
        ("- {name: one, backend: tensorflow}", "model 'one'", "backend"),
        ("- {name: one, backend: scripted}", "model 'one'", "script"),
        ("- {name: one, backend: scripted, script: echo, temperature: -1}", "model 'one'", "temperature"),
        ("- {name: one, backend: scripted, script: echo, top_p: 0}", "model 'one'", "top_p"),  # no token to sample
        ("- {name: one, backend: scripted, script: echo, weight: 0}", "model 'one'", "weight"),
        ("- {name: one, backend: scripted, script: echo, max_new_tokens: 1.5}", "model 'one'", "max_new_tokens"),
        ("- {name: one, backend: scripted, script: echo, enabled: 'yes'}", "model 'one'", "enabled"),
        ("- {name: one, backend: transformers, source: ./no-such-dir}", "model 'one'", "source"),
        ("- {name: one, backend: transformers, source: .}", "model 'one'", "source"),  # no config.json
        ("- {name: one, backend: transformers, source: 'not a hub id!'}", "model 'one'", "source"),
        ("- {name: one, backend: transformers, source: bundled:nothing}", "model 'one'", "source"),
        ("- {name: one, backend: transformers, source: bundled:smollm2, dtype: int3}", "model 'one'", "dtype"),
        ("- {name: one, backend: openai, model: m, base_url: 'ftp://x'}", "model 'one'", "base_url"),
        ("- {name: one, backend: openai, model: m, base_url: 'http://x/v1', api_key_env: 'sk-123 secret'}", "model 'one'", "api_key_env"),
        ("- {name: two, backend: scripted, script: echo}", "model 'two'", "name"),  # duplicate
        ('- {name: "one\\u202e", backend: scripted, script: echo}', "models[3]", "name"),  # a direction override
    ],
)
def test_each_bad_field_is_named_with_file_and_entry(tmp_path, models, entry, field):
    text = f"models:\n  - {{name: two, backend: scripted, script: echo}}\n  - {{name: three, backend: scripted, script: echo}}\n  {models}\n"
    error = problems_of(tmp_path, text)
    assert (entry, field) in [(e, f) for e, f, _ in error.problems], error
    message = str(error)
    assert str(tmp_path / "models.yaml") in message and entry in message and f"'{field}'" in message


def test_family_words_of_three_characters_give_the_model_away(tmp_path):
    """README: words under 3 characters are ignored as matching too much; 3 and more count."""
    from arena.identity import identity_leak

    config = load_config(write_config(tmp_path, f"""
        models:
          - {{name: mini-4k, backend: scripted, script: echo, family: [Phi, AI]}}
          - {GOOD_ENTRY}
    """))
    terms = config.models[0].identity_terms
    assert terms == ("Phi", "mini-4k")
    assert identity_leak(["As Phi, I would say hello."], list(terms)) == "Phi"


def test_one_name_typed_two_ways_is_a_duplicate(tmp_path):
    text = 'models:\n  - {name: "caf\\u00e9", backend: scripted, script: echo}\n  - {name: "cafe\\u0301", backend: scripted, script: echo}\n'
    error = problems_of(tmp_path, text)
    assert ("model 'caf\u00e9'", "name") in [(e, f) for e, f, _ in error.problems], error


@pytest.mark.parametrize("name, taken_as", [("  spaced  ", "spaced"), ("alpha\n", "alpha"), ("x" * 201, None),
                                            ("zero\u200bwidth", None), ("tab\tinside", None), ("cafe\u0301", "caf\u00e9")])
def test_models_yaml_and_vote_files_take_the_same_model_names(tmp_path, name, taken_as):
    """A name `models.yaml` takes must be one a vote file takes, spelled the same, or the two never meet."""
    from arena.battle_files import BattleFileError, read_battles

    path = write_config(tmp_path, f"models:\n  - {{name: {json.dumps(name)}, backend: scripted, script: echo}}\n  - {GOOD_ENTRY}\n")
    try:
        from_config = load_config(path).models[0].name
    except ConfigError:
        from_config = None
    votes = tmp_path / "votes.jsonl"
    votes.write_text(json.dumps({"model_a": name, "model_b": "one", "winner": "tie"}) + "\n", encoding="utf-8")
    try:
        from_file = read_battles(votes)[0]["model_a"]
    except BattleFileError:
        from_file = None
    assert from_config == from_file == taken_as  # None: refused by both


def test_a_missing_directory_under_a_local_folder_is_not_taken_for_a_hub_id(tmp_path):
    """`models/my-finetune` without `./`: a typo'd path would otherwise fail only at load, as a hub id."""
    (tmp_path / "models").mkdir()
    error = problems_of(tmp_path, "models:\n  - {name: one, backend: transformers, source: models/my-finetune}\n"
                                  f"  - {GOOD_ENTRY.replace('one', 'two')}\n")
    assert ("model 'one'", "source") in [(e, f) for e, f, _ in error.problems]
    assert "weights directory not found" in str(error) and "'models' is a directory" in str(error)


def test_missing_gguf_file_in_local_directory(tmp_path):
    (tmp_path / "weights").mkdir()
    error = problems_of(tmp_path, "models:\n  - {name: one, backend: transformers, source: ./weights, gguf_file: x.gguf}\n"
                                  f"  - {GOOD_ENTRY.replace('one', 'two')}\n")
    assert ("model 'one'", "gguf_file") in [(e, f) for e, f, _ in error.problems]
    assert "x.gguf" in str(error)


def test_every_problem_is_reported_at_once(tmp_path):
    error = problems_of(tmp_path, """
        settings: {sampling: clever, limits: {max_turns: 0}}
        models:
          - {name: one, backend: scripted, script: echo, top_p: 2}
          - {name: two, backend: scripted, script: echo, speed: fast}
    """)
    fields = {f for _, f, _ in error.problems}
    assert {"sampling", "max_turns", "top_p", "speed"} <= fields


def test_an_entry_with_a_bad_backend_or_name_still_has_its_other_fields_checked(tmp_path):
    error = problems_of(tmp_path, f"""
        models:
          - {{name: one, backend: tensorflow, top_p: 7, temperature: hot, colour: red}}
          - {{name: 5, backend: scripted, script: echo, weight: -1}}
          - {GOOD_ENTRY.replace("one", "two")}
          - {GOOD_ENTRY.replace("one", "three")}
          - {{name: 6, backend: transformers, source: ./no-such-dir, dtype: float64}}
          - {{name: 7, backend: openai, base_url: "not a url", model: ""}}
    """)
    reported = {(entry, field) for entry, field, _ in error.problems}
    assert {("model 'one'", "backend"), ("model 'one'", "top_p"), ("model 'one'", "temperature"),
            ("model 'one'", "colour"), ("models[2]", "name"), ("models[2]", "weight"),
            ("models[5]", "source"), ("models[5]", "dtype"), ("models[6]", "base_url"), ("models[6]", "model")} <= reported
    assert "got 5" in str(error) and "missing" not in str(error)


def test_values_yaml_reads_as_another_type_say_so(tmp_path):
    """YAML 1.1 reads an unquoted `no` as false, `1.10` as 1.1 and `1e3` (no dot) as text: the error says why."""
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    error = str(problems_of(tmp_path, f"""
        models:
          - {{name: no, backend: scripted, script: echo}}
          - {{name: 1.10, backend: scripted, script: echo, weight: 1e3}}
          - {{name: three, backend: scripted, script: echo, system_prompt: 12, weight: 2.5e-1}}
          - {{name: four, backend: transformers, source: ./weights.gguf}}
          - {GOOD_ENTRY.replace("one", "five")}
    """))
    assert "field 'name': must be a string (got False; YAML reads it unquoted as true/false: put it in quotes)" in error
    assert "field 'name': must be a string (got 1.1; YAML reads it unquoted as a number: put it in quotes)" in error
    assert "field 'weight': must be a number (got '1e3'; YAML reads it as text: write it as 1000.0)" in error
    assert "(got 12; YAML reads it unquoted as a number: put it in quotes)" in error
    assert "model 'four': field 'source': is a file, not a directory of weights" in error
    assert error.count("YAML reads") == 4  # 2.5e-1 is a number to YAML as well


def test_a_key_pasted_in_place_of_its_variable_name_is_not_echoed(tmp_path):
    error = problems_of(tmp_path, f"""
        models:
          - {{name: one, backend: openai, model: m, base_url: 'http://x/v1', api_key_env: 'sk-live-1234567890'}}
          - {GOOD_ENTRY.replace("one", "two")}
    """)
    assert "api_key_env" in str(error) and "sk-live" not in str(error)


@pytest.mark.parametrize("text, fragment", [
    ("models: [", "not valid YAML at line 1, column 10"),
    (f"models:\n  - {GOOD_ENTRY}\nmodels:\n  - {GOOD_ENTRY}\n",
     "refused at line 3, column 1: key 'models' is given twice (first on line 1); keep one"),
    ("models:\n  - {name: a, backend: scripted, script: echo, name: b}\n", "key 'name' is given twice"),
    (f"settings: []\nmodels:\n  - {GOOD_ENTRY}\n", "settings: must be a mapping"),
    ("models:\n  - {name: a, backend: scripted, script: echo, [1, 2]: x}\n", "found unhashable key"),
    (f"settings: {{limits: []}}\nmodels:\n  - {GOOD_ENTRY}\n", "field 'limits': must be a mapping"),
    ("- just a list", "top level must be a mapping"),
    ("models: []", "non-empty list"),
    ("models:\n  - {name: GPT-4, backend: scripted, script: echo}\n  - {name: gpt-4, backend: scripted, script: echo}\n",
     "model 'gpt-4': field 'name': differs from 'GPT-4' only in case"),
    ("models:\n  - name: a\n    backend: scripted\n   script: echo\n",
     "line 4, column 4: expected <block end>, but found '<block mapping start>'; check the indentation (the list or "
     "mapping that starts at line 2)"),
    ('models:\n  - name: "a\n    backend: scripted\n', "a quote opened at line 2 is never closed"),
    ("models:\n  - name: a\n\tbackend: scripted\n", "tabs cannot indent YAML: use spaces"),
    ("models:\n  - {name: a, script: echo}\n  - {name: b, backend: scripted, script: echo}\n",
     "model 'a': field 'backend': missing: every model needs one of"),
    (f"models:\n  - {GOOD_ENTRY}\n", "at least two enabled"),
])
def test_file_level_problems(tmp_path, text, fragment):
    assert fragment in str(problems_of(tmp_path, text))


def test_unreadable_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="no-such.yaml"):
        load_config(tmp_path / "no-such.yaml")


def test_bundled_source_resolves_to_the_packaged_gguf(tmp_path):
    config = load_config(write_config(tmp_path, """
        models:
          - {name: a, backend: transformers, source: bundled:smollm2}
          - {name: b, backend: transformers, source: bundled:smollm2, temperature: 0}
    """))
    a, b = config.models
    assert a.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and (a.source + "/" + a.gguf_file).endswith(".gguf")
    assert b.generation.greedy and not a.generation.greedy


def test_hub_id_is_accepted_without_touching_the_network(tmp_path):
    config = load_config(write_config(tmp_path, """
        models:
          - {name: a, backend: transformers, source: Qwen/Qwen2.5-0.5B-Instruct}
          - {name: b, backend: openai, base_url: 'http://127.0.0.1:9/v1', model: x, api_key_env: KEY}
    """))
    assert config.models[0].source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.models[1].api_key_env == "KEY"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
entry_keys = st.sampled_from(["name", "backend", "script", "weight", "temperature", "top_p", "enabled", "source",
                              "max_new_tokens", "family", "base_url", "model", "colour"])


@settings(max_examples=300, deadline=None)
@given(document=st.one_of(
    yaml_values,
    st.fixed_dictionaries({"models": st.lists(st.dictionaries(entry_keys, yaml_values, max_size=6), max_size=4)}),
    st.fixed_dictionaries({"settings": yaml_values, "models": st.lists(yaml_values, max_size=3)}),
))
def test_any_document_gives_a_config_or_a_config_error(document, tmp_path_factory):
    from pathlib import Path

    try:
        config = parse_config(document, Path("fuzz.yaml"))
    except ConfigError as error:
        assert error.problems and "fuzz.yaml" in str(error)
    else:
        assert len(config.enabled_models) >= 2


def test_every_backend_a_config_accepts_has_its_class():
    from arena.backends import Backend, backend_class
    from arena.config import BACKEND_KINDS, ModelEntry

    for name, kind in BACKEND_KINDS.items():
        served_by = backend_class(ModelEntry(name="m", backend=name))
        assert issubclass(served_by, Backend) and served_by.__name__ == kind.class_name

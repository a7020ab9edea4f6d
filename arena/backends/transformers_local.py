"""Models run in this process with Hugging Face transformers.

The same code loads a hub id, a local directory or a GGUF file (the bundled
SmolLM2 ships as one). Dequantising a GGUF costs ~20 s at every start, so the
converted weights are cached as safetensors, keyed by the GGUF's hash.
Generation goes through one `BatchedDecoder` per loaded model, so every
contestant sharing these weights is decoded in the same forward passes.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path

from arena.backends.base import Backend, Delta, GenerationError, Message, ProgressReport
from arena.config import GenerationSettings, ModelEntry


HUB_PROBE_TIMEOUT_S = 10


class TransformersBackend(Backend):
    def __init__(self, entry: ModelEntry, *, cache_dir: Path | None = None):
        super().__init__(entry, cache_dir=cache_dir)
        self.model = None
        self.tokenizer = None
        self.decoder = None  # a batching.BatchedDecoder once loaded

    @staticmethod
    def sharing_key(entry: ModelEntry) -> Hashable:
        return ("transformers", entry.source, entry.gguf_file, entry.dtype, entry.device)

    def load(self, report: ProgressReport) -> None:
        from arena.decoding.cpu_threads import configure_cpu_threads

        configure_cpu_threads()  # before torch's first import
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from arena.decoding.batching import BatchedDecoder

        source, options = self.entry.source, {}
        cache_path = self._cache_path()  # hashes the GGUF: once per start
        cached = cache_path if cache_path is not None and _holds_conversion(cache_path) else None
        if cached is not None:
            source = str(cached)
            report(f"loading cached conversion {cached}")
        elif self.entry.gguf_file:
            options["gguf_file"] = self.entry.gguf_file
            report(f"loading {self.entry.gguf_file} from {source} (dequantising GGUF, ~20 s on 2 cores)")
        else:
            report(f"loading {source}")
        if cached is None and not Path(source).is_dir():
            options.update(_hub_options(source, self.entry.gguf_file, report))
        dtype = "auto" if self.entry.dtype == "auto" else getattr(torch, self.entry.dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **options)
        except Exception as exc:
            raise _tokenizer_error(source, options, exc) from exc
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options)
        self.model.to(self.entry.device if self.entry.device != "auto" else _best_device(torch))
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise GenerationError(f"{source} has no chat template; use an instruct/chat model")
        if cached is None and cache_path is not None:
            self._write_conversion(cache_path, report)
        self.decoder = BatchedDecoder(self.model, _stop_ids(self.model, self.tokenizer))

    def stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event,
               group: Hashable | None = None) -> Iterator[Delta]:
        if self.decoder is None:
            raise GenerationError("model is not loaded")
        prompt = self._prompt_ids(messages)
        limit = self.context_length()
        if limit and len(prompt) + settings.max_new_tokens > limit:
            raise GenerationError(f"the conversation is too long for this model: {len(prompt)} tokens, plus up to "
                                  f"{settings.max_new_tokens} new ones, is more than the {limit} it can read")
        yield from _text_deltas(self.tokenizer, self.decoder.generate(prompt, settings, cancel, group),
                                limit=settings.max_new_tokens, stop_ids=self.decoder.stop_ids)

    def prompt_tokens(self, messages: list[Message]) -> int | None:
        return len(self._prompt_ids(messages)) if self.tokenizer is not None else None

    def _prompt_ids(self, messages: list[Message]) -> list[int]:
        """The ids the model reads: the one encoding both answering and counting use.

        Messages are text, whoever wrote them: a control token written in a prompt or an earlier answer
        (`<|im_end|>`, `<|im_start|>assistant`) is encoded as the characters it is made of, never as the
        turn marker, so a volunteer cannot write turns of their own into the conversation (and make a
        greedy model answer nothing, failing its battles). The template's own markers stay tokens, and a
        conversation without such text is encoded exactly as `apply_chat_template` always did.
        """
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                  sanitize_control_tokens=True)["input_ids"]

    def settings_problem(self, settings: GenerationSettings) -> str | None:
        limit = self.context_length()
        if limit and settings.max_new_tokens >= limit:
            return (f"max_new_tokens is {settings.max_new_tokens}, but this model reads at most {limit} tokens "
                    "in all, prompt included: lower max_new_tokens in models.yaml")
        return None

    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None) if self.model is not None else None

    def close(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
        self.decoder = None
        self.model = None
        self.tokenizer = None

    # --- cold-start cache -------------------------------------------------

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None or not self.entry.gguf_file:
            return None
        gguf = Path(self.entry.source) / self.entry.gguf_file
        if not gguf.is_file():
            return None
        digest = hashlib.sha256()
        with gguf.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return self.cache_dir / f"{gguf.stem}-{digest.hexdigest()[:16]}-{self.entry.dtype}"

    def _write_conversion(self, path: Path, report: ProgressReport) -> None:
        """Save the dequantised weights so the next start skips the GGUF conversion.

        Written to a folder of its own, then renamed: two arenas starting at once on one cache
        (or test workers) neither write into each other's files nor see a half-written conversion.
        """
        model = self.model
        quantizer, quantization = getattr(model, "hf_quantizer", None), getattr(model.config, "quantization_config", None)
        partial = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".partial", dir=path.parent))
            # A GGUF-loaded model refuses save_pretrained while it still looks quantised.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.config.architectures = [type(model).__name__]
            model.save_pretrained(partial)
            self.tokenizer.save_pretrained(partial)
            partial.replace(path)
            report(f"cached converted weights in {path}")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
            if not _holds_conversion(path):  # another start renamed the same conversion there first: no failure
                report(f"could not cache converted weights ({exc}); the next start converts again")
        finally:
            model.hf_quantizer = quantizer
            if quantization is not None:
                model.config.quantization_config = quantization


def _hub_options(repo_id: str, gguf_file: str | None, report: ProgressReport) -> dict:
    """Ask the hub once, quickly, before loading a hub id.

    Left to itself, every file request retries for most of a minute when the
    hub cannot be reached, and then fails with a message that does not name
    the model. One probe tells a typo, a gated model and a missing network
    apart, and a model already in the local cache loads without the network.
    """
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    in_cache = isinstance(try_to_load_from_cache(repo_id, gguf_file or "config.json"), str)
    where = f"the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if constants.HF_HUB_OFFLINE:
        if not in_cache:
            raise GenerationError(f"hub model '{repo_id}' is not in {where}, and HF_HUB_OFFLINE is set: "
                                  "start once with internet, or set source to a local directory")
        report(f"HF_HUB_OFFLINE is set: loading '{repo_id}' from {where}")
        return {"local_files_only": True}
    try:
        HfApi().model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError as exc:
        if in_cache:
            return {"local_files_only": True}
        raise GenerationError(f"hub model '{repo_id}' is gated: accept its licence on the hub and set HF_TOKEN "
                              f"({_first_line(exc)})") from exc
    except RepositoryNotFoundError as exc:
        if in_cache:
            report(f"warning: the hub does not show '{repo_id}' (private, or renamed); loading it from {where}")
            return {"local_files_only": True}
        raise GenerationError(f"no model '{repo_id}' on the Hugging Face hub: check the id, or set HF_TOKEN "
                              "if it is private") from exc
    except Exception as exc:  # the network, a proxy or the hub itself: all mean "not reachable now"
        if in_cache:
            report(f"cannot reach the Hugging Face hub ({_first_line(exc)}); loading '{repo_id}' from {where}")
            return {"local_files_only": True}
        raise GenerationError(f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({_first_line(exc)}), "
                              f"and hub model '{repo_id}' is not in {where}: start once with internet, "
                              "or set source to a local directory") from exc
    if not in_cache:
        report(f"downloading '{repo_id}' from the hub (this start only: it is kept in {where})")
    return {}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _holds_conversion(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _best_device(torch) -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _stop_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer, as `generate` would read them."""
    configured = model.generation_config.eos_token_id
    if configured is None:
        configured = tokenizer.eos_token_id
    return set(configured) if isinstance(configured, (list, tuple)) else {configured} if configured is not None else set()


def _text_deltas(tokenizer, tokens: Iterator[int], *, limit: int, stop_ids: frozenset[int]) -> Iterator[Delta]:
    """Turn token ids into text pieces as they arrive.

    Decoding the whole answer each time (instead of token by token) keeps
    multi-token characters and leading spaces right.
    """
    answer: list[int] = []
    shown = ""
    pending = 0
    for token in tokens:
        answer.append(token)
        pending += 1
        text = tokenizer.decode(answer, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        if len(text) > len(shown) and text.startswith(shown):
            yield Delta(text[len(shown):], pending)
            shown, pending = text, 0
    if pending:
        text = tokenizer.decode(answer, skip_special_tokens=True)
        yield Delta(text[len(shown):], pending)
    if len(answer) >= limit and answer[-1] not in stop_ids:
        yield Delta("", 0, cut=True)


# Files a Hugging Face tokenizer is built from; a folder with none of them has no tokenizer at all.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model",
                    "sentencepiece.bpe.model", "tiktoken.model", "vocab.txt")


def _tokenizer_error(source: str, options: dict, exc: Exception) -> Exception:
    """A local folder without tokenizer files: say so, instead of transformers' advice to install packages."""
    folder = Path(source)
    if folder.is_dir() and "gguf_file" not in options and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return GenerationError(f"{folder} has no tokenizer files (none of {', '.join(_TOKENIZER_FILES[:4])}, …): copy "
                               "them in from where the weights came from")
    return exc

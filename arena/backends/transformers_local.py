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
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path

from arena.backends.base import Backend, Delta, GenerationError, Message, ProgressReport
from arena.config import GenerationSettings, ModelEntry


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
        from arena.backends.cpu_threads import configure_cpu_threads

        configure_cpu_threads()  # before torch's first import
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from arena.backends.batching import BatchedDecoder

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
        dtype = "auto" if self.entry.dtype == "auto" else getattr(torch, self.entry.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(source, **options)
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options)
        self.model.to(self.entry.device if self.entry.device != "auto" else _best_device(torch))
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise GenerationError(f"{source} has no chat template; use an instruct/chat model")
        if cached is None and cache_path is not None:
            self._write_conversion(cache_path, report)
        self.decoder = BatchedDecoder(self.model, _stop_ids(self.model, self.tokenizer))

    def stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event) -> Iterator[Delta]:
        if self.decoder is None:
            raise GenerationError("model is not loaded")
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        limit = self._context_length()
        if limit and len(prompt) + settings.max_new_tokens > limit:
            raise GenerationError(f"the conversation is too long for this model: {len(prompt)} tokens, plus up to "
                                  f"{settings.max_new_tokens} new ones, is more than the {limit} it can read")
        yield from _text_deltas(self.tokenizer, self.decoder.generate(prompt, settings, cancel),
                                limit=settings.max_new_tokens, stop_ids=self.decoder.stop_ids)

    def settings_problem(self, settings: GenerationSettings) -> str | None:
        limit = self._context_length()
        if limit and settings.max_new_tokens >= limit:
            return (f"max_new_tokens is {settings.max_new_tokens}, but this model reads at most {limit} tokens "
                    "in all, prompt included: lower max_new_tokens in models.yaml")
        return None

    def _context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

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
        """Save the dequantised weights so the next start skips the GGUF conversion."""
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model = self.model
        quantizer, quantization = getattr(model, "hf_quantizer", None), getattr(model.config, "quantization_config", None)
        try:
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
            shutil.rmtree(partial, ignore_errors=True)
            report(f"could not cache converted weights ({exc}); the next start converts again")
        finally:
            model.hf_quantizer = quantizer
            if quantization is not None:
                model.config.quantization_config = quantization


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

"""Models run in this process with Hugging Face transformers.

The same code loads a hub id, a local directory or a GGUF file (the bundled
SmolLM2 ships as one). Dequantising a GGUF costs ~20 s at every start, so the
converted weights are cached as safetensors, keyed by the GGUF's hash.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path

from arena.backends.base import Backend, Delta, GenerationError, Message, ProgressReport
from arena.config import GenerationSettings, ModelEntry

_END = object()


class TransformersBackend(Backend):
    def __init__(self, entry: ModelEntry, *, cache_dir: Path | None = None):
        super().__init__(entry, cache_dir=cache_dir)
        self.model = None
        self.tokenizer = None

    @staticmethod
    def sharing_key(entry: ModelEntry) -> Hashable:
        return ("transformers", entry.source, entry.gguf_file, entry.dtype, entry.device)

    def load(self, report: ProgressReport) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, options = self.entry.source, {}
        cached = self._cached_conversion(report)
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
        if cached is None and self.entry.gguf_file and self.cache_dir is not None:
            self._write_conversion(report)

    def stream(self, messages: list[Message], settings: GenerationSettings, cancel: threading.Event) -> Iterator[Delta]:
        if self.model is None:
            raise GenerationError("model is not loaded")
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        inputs = inputs.to(self.model.device)
        streamer = _TokenStreamer(self.tokenizer, cancel)
        options = dict(
            **inputs,
            max_new_tokens=settings.max_new_tokens,
            repetition_penalty=settings.repetition_penalty,
            streamer=streamer,
            stopping_criteria=_cancel_criteria(cancel),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if settings.greedy:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            options.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        worker = threading.Thread(target=streamer.run, args=(self.model.generate, options), daemon=True)
        worker.start()
        try:
            yield from streamer.deltas()
        finally:
            cancel.set()

    def close(self) -> None:
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

    def _cached_conversion(self, report: ProgressReport) -> Path | None:
        path = self._cache_path()
        if path is not None and (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            return path
        return None

    def _write_conversion(self, report: ProgressReport) -> None:
        """Save the dequantised weights so the next start skips the GGUF conversion."""
        path = self._cache_path()
        if path is None:
            return
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


def _best_device(torch) -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cancel_criteria(cancel: threading.Event):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class CancelCriteria(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([CancelCriteria()])


class _TokenStreamer:
    """Receives token ids from `generate` on a worker thread and hands out text deltas.

    Decoding the whole answer each time (instead of token by token) keeps
    multi-token characters and leading spaces right.
    """

    def __init__(self, tokenizer, cancel: threading.Event):
        self.tokenizer = tokenizer
        self.cancel = cancel
        self.items: queue.Queue = queue.Queue()
        self.seen_prompt = False

    # generate() calls put/end
    def put(self, value) -> None:
        if not self.seen_prompt:  # the first call carries the prompt
            self.seen_prompt = True
            return
        self.items.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.items.put(_END)

    def run(self, generate, options) -> None:
        try:
            generate(**options)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.items.put(exc)
        finally:
            self.items.put(_END)

    def deltas(self) -> Iterator[Delta]:
        tokens: list[int] = []
        shown = ""
        pending = 0
        while True:
            item = self.items.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise GenerationError(f"generation failed: {type(item).__name__}: {item}") from item
            tokens.extend(item)
            pending += len(item)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if len(text) > len(shown) and text.startswith(shown):
                yield Delta(text[len(shown):], pending)
                shown, pending = text, 0
        if pending:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            yield Delta(text[len(shown):], pending)

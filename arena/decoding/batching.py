"""One forward pass per step for every answer a loaded model is writing.

Decoding a small model on a CPU is bound by reading the weights from memory:
a step that extends sixteen sequences reads them once, like a step for one.
So every request to the same weights joins one running batch instead of
running its own `generate` on its own thread (two of those only compete for
the same cores and memory bus).

A scheduler thread owns the model. Between steps it prefills newcomers, each
prompt on its own and in bounded chunks so a long conversation cannot freeze
the others' streams (shortest first, so it cannot hold back a short newcomer
either), then merges their key/value cache into a batch of rows of similar
length (left padded, masked). Each step decodes one token for every row; each row picks it
with its own settings (`next_token`). A row that finishes, is cancelled or
fails leaves the batch; the others carry on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Container, Hashable, Iterator
from dataclasses import dataclass, field

import torch
from torch.nn import functional
from transformers.cache_utils import DynamicCache, DynamicLayer

from arena.backends.base import GenerationError
from arena.decoding.next_token import RowState, choose_next_tokens
from arena.config import GenerationSettings

log = logging.getLogger("arena")

_STARTED_GROUPS_KEPT = 1024  # far more battles than start at once
_END = object()


@dataclass(eq=False)  # each request is itself, not its fields: it is looked up in lists
class _Request:
    prompt: list[int]
    settings: GenerationSettings
    cancel: threading.Event
    group: Hashable | None = None  # answers to start together (the two sides of a battle)
    outbox: queue.Queue = field(default_factory=queue.Queue)
    cache: object = None  # the request's own key/value cache while its prompt is prefilled
    prefilled: int = 0
    generated: int = 0
    last_token: int = 0
    row: RowState | None = None

    def __post_init__(self):
        self.row = RowState(self.settings, torch.tensor(sorted(set(self.prompt)), dtype=torch.long))

    @property
    def left_to_read(self) -> int:
        return len(self.prompt) - self.prefilled

    def accept(self, token: int, stop_ids: frozenset[int]) -> bool:
        """Hand a new token to the reader; True once the answer is complete."""
        self.generated += 1
        self.last_token = token
        self.outbox.put(token)
        if self.settings.repetition_penalty != 1.0 and not bool((self.row.seen == token).any()):
            self.row.seen = torch.cat([self.row.seen, torch.tensor([token])])
        return token in stop_ids or self.generated >= self.settings.max_new_tokens

    def finish(self) -> None:
        self.cache = None
        self.outbox.put(_END)

    def fail(self, error: BaseException) -> None:
        self.cache = None
        self.outbox.put(error)
        self.outbox.put(_END)


class _KVBatch:
    """The running batch: one key/value cache for all rows, left padded to a common length."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.requests: list[_Request] = []
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)  # 1 where a cache column holds a real token of that row
        self.positions = torch.zeros(0, dtype=torch.long, device=device)  # the position the row's next token takes

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def width(self) -> int:
        """Cache columns every row carries, padding included: what each step reads per row."""
        return self.mask.shape[1]

    def join(self, request: _Request) -> None:
        """Add a prefilled request, padding either side's cache on the left to the longer length."""
        length = request.prefilled
        row_mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if not self.requests:
            self.cache, self.mask = request.cache, row_mask
            self.cache.layers = [_ReservedLayer.holding(layer.keys, layer.values) if type(layer) is DynamicLayer else layer
                                 for layer in self.cache.layers]
        else:
            width = max(length, self.mask.shape[1])
            self.cache.layers = [
                _ReservedLayer.holding(torch.cat([_pad_left(ours.keys, width), _pad_left(theirs.keys, width)]),
                                       torch.cat([_pad_left(ours.values, width), _pad_left(theirs.values, width)]))
                for ours, theirs in zip(self.cache.layers, request.cache.layers)
            ]
            self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(row_mask, width, dim=1)])
        self.positions = torch.cat([self.positions, torch.tensor([length], device=self.device)])
        self.requests.append(request)
        request.cache = None

    def step(self, model) -> torch.Tensor:
        """Run one token of every row through the model; returns next-token scores [rows, vocab]."""
        tokens = torch.tensor([[r.last_token] for r in self.requests], device=self.device)
        mask = torch.cat([self.mask, torch.ones((len(self.requests), 1), dtype=torch.long, device=self.device)], dim=1)
        output = model(input_ids=tokens, attention_mask=mask, position_ids=self.positions.unsqueeze(1),
                       past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache, self.mask = output.past_key_values, mask
        self.positions = self.positions + 1
        return output.logits[:, -1, :]

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in `rows`, and the padding columns no remaining row needs."""
        if len(rows) == len(self.requests):
            return
        self.requests = [self.requests[i] for i in rows]
        if not rows:
            self.cache, self.mask, self.positions = None, self.mask[:0, :0], self.positions[:0]
            return
        index = torch.tensor(rows, device=self.device)
        start = int(self.mask[index].any(dim=0).int().argmax())
        self.cache.layers = [_ReservedLayer.holding(layer.keys[index, :, start:], layer.values[index, :, start:])
                             for layer in self.cache.layers]
        self.mask, self.positions = self.mask[index, start:], self.positions[index]


class _ReservedLayer(DynamicLayer):
    """One layer's keys and values in buffers with room to grow.

    transformers' own layer concatenates at every step, allocating and copying
    the whole cache: with 16 rows that was a fifth of a step. Here a step
    writes its column in place, and the buffer grows by `SPARE` columns at a time.
    """

    SPARE = 128

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor) -> "_ReservedLayer":
        layer = cls()
        layer.lazy_initialization(keys, values)
        layer._reserve(keys, values)
        return layer

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        batch, heads, length, width = keys.shape
        self.key_buffer = keys.new_empty((batch, heads, length + self.SPARE, width))
        self.value_buffer = values.new_empty((batch, heads, length + self.SPARE, width))
        self.key_buffer[:, :, :length] = keys
        self.value_buffer[:, :, :length] = values
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.keys.shape[2]
        end = start + key_states.shape[2]
        if end > self.key_buffer.shape[2]:
            self._reserve(self.keys, self.values)
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


# Rows share a batch while their lengths are within this factor (plus a margin): every row is padded to
# the longest, so one conversation of thousands of tokens in a batch of short ones would make each step
# read thousands of padding columns for every row. Apart, it costs one more (small) step of its own.
_LENGTH_RATIO, _LENGTH_MARGIN = 2, 256


def prefill_order(waiting: list[_Request], started: Container[Hashable] = (), head_start: int = 0) -> list[_Request]:
    """Least left to read first, a group's prompts counted together and read one after the other, and a
    group already `started` (a prompt of it read, in part or whole) before any other while it has at most
    `head_start` tokens left: two long follow-ups must not hold back a short newcomer.

    Taken one by one, the two sides of a battle were read apart whenever other prompts came between
    them, and the one left waiting started seconds later; an anonymous battle shows both answers only
    once both have started (`arena/duel.py`), so the first waited too.
    """
    def group(request: _Request) -> Hashable:
        return request if request.group is None else request.group  # alone, a request is its own group

    left: dict[Hashable, int] = {}  # insertion order: ties go to the group that came first
    for request in waiting:
        left[group(request)] = left.get(group(request), 0) + request.left_to_read
    arrival = {key: position for position, key in enumerate(left)}
    def finishing(request: _Request) -> bool:
        return request.group is not None and request.group in started and left[request.group] <= head_start

    return sorted(waiting, key=lambda r: (not finishing(r), left[group(r)], arrival[group(r)], r.left_to_read))


def _similar_length(width: int, length: int) -> bool:
    return max(width, length) <= _LENGTH_RATIO * min(width, length) + _LENGTH_MARGIN


def _pad_left(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    padding = [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0]
    return functional.pad(tensor, padding)


class BatchedDecoder:
    """Serves every generation request for one loaded model from a single batch.

    `max_rows` bounds the rows decoded at once (more requests wait their
    turn); `prefill_chunk` bounds the prompt tokens processed between two
    decode steps, and `busy_prefill_chunk` while answers are streaming: how
    long running answers may pause for a newcomer at each token.
    Models whose cache cannot be padded and merged (sliding-window or
    recurrent layers) get one single-row batch per request, stepped in turn.
    """

    def __init__(self, model, stop_ids: set[int], *, max_rows: int = 32, prefill_chunk: int = 128,
                 busy_prefill_chunk: int = 32):
        self.model = model
        self.stop_ids = frozenset(stop_ids)
        self.max_rows = max_rows
        self.prefill_chunk = prefill_chunk
        # While answers stream, a step reads at most this many prompt tokens: on 2 cores 128 of them take
        # ~1.5 s, so a 3,000-token prompt made every streaming answer wait that long for each token.
        self.busy_prefill_chunk = busy_prefill_chunk
        self.mergeable = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
        if not self.mergeable:
            log.warning("%s has no plain key/value cache: its answers are decoded side by side, not batched",
                        type(model).__name__)
        self.inbox: queue.Queue = queue.Queue()
        self.waiting: list[_Request] = []
        self.started_groups: OrderedDict[Hashable, None] = OrderedDict()  # the latest groups whose reading began
        self.batches: list[_KVBatch] = []
        self.stopping = threading.Event()
        self.widest_batch = 0  # the most rows one step has decoded: shows batching happened
        self.worker = threading.Thread(target=self._run, name="batched-decoder", daemon=True)
        self.worker.start()

    @property
    def rows(self) -> int:
        return sum(len(batch) for batch in self.batches)

    def generate(self, prompt: list[int], settings: GenerationSettings, cancel: threading.Event,
                 group: Hashable | None = None) -> Iterator[int]:
        """Yield the answer's token ids one at a time, as the batch produces them; prompts of one `group`
        are read one after the other, so that their answers start at nearly the same step."""
        if self.stopping.is_set():
            raise GenerationError("the model was unloaded")
        request = _Request(list(prompt), settings, cancel, group)
        self.inbox.put(request)
        try:
            while True:
                try:
                    item = request.outbox.get(timeout=1.0)
                except queue.Empty:
                    if not self.worker.is_alive():
                        raise GenerationError("the model's decoding thread stopped") from None
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, GenerationError):
                        raise item
                    raise GenerationError(f"generation failed: {type(item).__name__}: {item}") from item
                yield item
        finally:
            cancel.set()  # if the reader stopped early, its row leaves the batch at the next step

    def close(self) -> None:
        self.stopping.set()
        self.inbox.put(None)
        self.worker.join(timeout=30)

    # --- the scheduler thread ------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self.stopping.is_set():
                try:
                    self._admit(block=not self.batches and not self.waiting)
                    self._drop_cancelled()
                    self._prefill()
                    self.batches = [batch for batch in self.batches if batch]
                    for batch in self.batches:
                        self._decode_step(batch)
                except Exception as exc:  # noqa: BLE001 - a bug here must not stop the model for every later request
                    log.exception("batched decoder failed; failing the requests in flight")
                    self._fail_all(exc)
        self.waiting.extend(self._drain_inbox())
        self._fail_all(GenerationError("the model was unloaded"))

    def _fail_all(self, error: BaseException) -> None:
        for request in [*self.waiting, *(r for batch in self.batches for r in batch.requests)]:
            request.fail(error)
        self.waiting, self.batches = [], []

    def _admit(self, block: bool) -> None:
        if block:
            try:
                first = self.inbox.get(timeout=0.5)
            except queue.Empty:
                return
            if first is not None:
                self.waiting.append(first)
        self.waiting.extend(self._drain_inbox())

    def _drain_inbox(self) -> list[_Request]:
        arrived = []
        while True:
            try:
                request = self.inbox.get_nowait()
            except queue.Empty:
                return arrived
            if request is not None:
                arrived.append(request)

    def _drop_cancelled(self) -> None:
        for request in [r for r in self.waiting if r.cancel.is_set()]:
            self.waiting.remove(request)
            request.finish()
        for batch in self.batches:
            staying = []
            for row, request in enumerate(batch.requests):
                if request.cancel.is_set():
                    request.finish()
                else:
                    staying.append(row)
            batch.keep(staying)

    def _prefill(self) -> None:
        """Spend up to `prefill_chunk` prompt tokens (`busy_prefill_chunk` while rows stream) on the waiting
        requests, least left to read first (a battle's two prompts together: `prefill_order`).

        Oldest first, one long conversation (thousands of tokens of rare characters) made every
        prompt behind it wait for all of it; this way a short prompt starts at once.
        """
        spent = 0
        for request in prefill_order(self.waiting, self.started_groups, head_start=self.prefill_chunk):
            budget = (self.busy_prefill_chunk if self.rows else self.prefill_chunk) - spent  # a row seated just now counts
            if budget <= 0 or self.rows >= self.max_rows:
                return
            try:
                spent += self._prefill_chunk(request, budget)
            except Exception as exc:  # noqa: BLE001 - this prompt fails alone
                if request in self.waiting:
                    self.waiting.remove(request)
                request.fail(exc)

    def _prefill_chunk(self, request: _Request, budget: int) -> int:
        """Feed the next part of a prompt; once it is all in, pick the first token and seat the row."""
        chunk = request.prompt[request.prefilled:request.prefilled + budget]
        if request.group is not None:  # its partner goes next (a battle's answers come a few at a time)
            self.started_groups[request.group] = None
            while len(self.started_groups) > _STARTED_GROUPS_KEPT:
                self.started_groups.popitem(last=False)
        device = self.model.device
        output = self.model(input_ids=torch.tensor([chunk], device=device), past_key_values=request.cache,
                            position_ids=torch.arange(request.prefilled, request.prefilled + len(chunk), device=device).unsqueeze(0),
                            use_cache=True, logits_to_keep=1)
        request.cache = output.past_key_values
        request.prefilled += len(chunk)
        if request.prefilled < len(request.prompt):
            return len(chunk)
        [choice] = choose_next_tokens(output.logits[:, -1, :], [request.row])
        if isinstance(choice, Exception):
            raise choice
        self.waiting.remove(request)
        if request.accept(choice, self.stop_ids):
            request.finish()
        else:
            batch = next((b for b in self.batches if self.mergeable and _similar_length(b.width, request.prefilled)), None)
            if batch is None:
                batch = _KVBatch(self.model.device)
                self.batches.append(batch)
            batch.join(request)
        return len(chunk)

    def _decode_step(self, batch: _KVBatch) -> None:
        self.widest_batch = max(self.widest_batch, len(batch))
        try:
            logits = batch.step(self.model)
        except Exception as exc:  # noqa: BLE001 - a shared step cannot be blamed on one row
            log.exception("batched decoding step failed; failing its %d requests", len(batch))
            for request in batch.requests:
                request.fail(exc)
            batch.keep([])
            return
        staying = []
        for row, (request, choice) in enumerate(zip(batch.requests, choose_next_tokens(logits, [r.row for r in batch.requests]))):
            if isinstance(choice, Exception):
                request.fail(choice)
            elif request.accept(choice, self.stop_ids):
                request.finish()
            else:
                staying.append(row)
        batch.keep(staying)

"""Many requests to one loaded model share its batch without noticing each other.

The real bundled SmolLM2; greedy answers are deterministic, so an answer
written while other requests share the batch must equal the one written alone.
"""

from __future__ import annotations

import threading
import time

import pytest

from arena.decoding import next_token
from arena.decoding.batching import _Request, prefill_order
from arena.backends.base import GenerationError
from arena.backends.transformers_local import TransformersBackend
from arena.config import GenerationSettings, ModelEntry, bundled_model_path
from tests.conftest import MODEL_CACHE, wait_until

pytestmark = pytest.mark.model

GREEDY = GenerationSettings(max_new_tokens=16, temperature=0)
PROMPTS = {
    "capital": "What is the capital of France?",
    "planets": "List the planets of the solar system, from the closest to the sun to the farthest.",
    "bread": "How do I bake bread at home? Give me the steps.",
}


@pytest.fixture(scope="module")
def backend():
    gguf = bundled_model_path("smollm2")
    loaded = TransformersBackend(ModelEntry(name="smollm2", backend="transformers", source=str(gguf.parent), gguf_file=gguf.name),
                                 cache_dir=MODEL_CACHE)
    loaded.load(lambda message: None)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def alone(backend):
    """Each prompt's greedy answer with nothing else running: the reference."""
    return {key: answer(backend, prompt, GREEDY) for key, prompt in PROMPTS.items()}


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def answer(backend, prompt: str, settings: GenerationSettings, cancel: threading.Event | None = None) -> tuple[str, int]:
    deltas = list(backend.stream(chat(prompt), settings, cancel or threading.Event()))
    return "".join(d.text for d in deltas), sum(d.tokens for d in deltas)


def run_together(jobs: dict[str, callable], stagger_s: float = 0.05) -> dict[str, object]:
    """Start every job on its own thread, a little apart so they join a batch already running."""
    results: dict[str, object] = {}

    def run(key, job):
        try:
            results[key] = job()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[key] = exc

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in jobs.items()]
    for thread in threads:
        thread.start()
        time.sleep(stagger_s)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request never finished"
    return results


def test_a_greedy_answer_is_the_one_transformers_generate_writes(backend, alone):
    """The batch machinery (positions, padding, in-place cache) against the library's own decoding loop."""
    import torch

    prompt = backend.tokenizer.apply_chat_template(chat(PROMPTS["planets"]), add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        written = backend.model.generate(**prompt, max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
                                         temperature=None, top_p=None, top_k=None,
                                         pad_token_id=backend.tokenizer.eos_token_id)
    reference = backend.tokenizer.decode(written[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert alone["planets"][0] == reference


def test_a_penalised_greedy_answer_is_the_one_transformers_generate_writes(backend):
    """The repetition penalty as transformers applies it: over the prompt and every token of the answer so far."""
    import torch

    penalised = GenerationSettings(max_new_tokens=24, temperature=0, repetition_penalty=1.5)
    prompt = backend.tokenizer.apply_chat_template(chat(PROMPTS["planets"]), add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        written = backend.model.generate(**prompt, max_new_tokens=penalised.max_new_tokens, do_sample=False,
                                         temperature=None, top_p=None, top_k=None, repetition_penalty=1.5,
                                         pad_token_id=backend.tokenizer.eos_token_id)
    reference = backend.tokenizer.decode(written[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer(backend, PROMPTS["planets"], penalised)[0] == reference


def row(**settings) -> next_token.RowState:
    import torch

    return next_token.RowState(GenerationSettings(**settings), seen=torch.tensor([0], dtype=torch.long))


def test_each_sampled_row_draws_at_its_own_temperature():
    import torch

    torch.manual_seed(0)
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]] * 2)
    hot, cold = row(temperature=50.0), row(temperature=0.01)
    draws = [next_token.choose_next_tokens(scores, [hot, cold]) for _ in range(200)]
    assert {cold_choice for _, cold_choice in draws} == {0}  # nearly greedy: always the top token
    assert len({hot_choice for hot_choice, _ in draws}) == 4  # nearly flat: every token now and then


def test_the_repetition_penalty_makes_a_seen_token_less_likely_whatever_its_sign():
    import torch

    positive = torch.tensor([[3.0, 2.0, -1.0]])  # token 0 was seen: 3 / 2 = 1.5 falls below token 1
    assert next_token.choose_next_tokens(positive, [row(temperature=0, repetition_penalty=2.0)]) == [1]
    negative = torch.tensor([[-1.0, -1.5, -9.0]])  # token 0 was seen: -1 * 2 = -2 falls below token 1
    assert next_token.choose_next_tokens(negative, [row(temperature=0, repetition_penalty=2.0)]) == [1]
    assert next_token.choose_next_tokens(positive, [row(temperature=0)]) == [0]  # no penalty, no change


def test_concurrent_requests_keep_their_own_settings(backend, alone):
    backend.decoder.widest_batch = 0
    penalised = GenerationSettings(max_new_tokens=24, temperature=0, repetition_penalty=1.5)
    nucleus_of_one = GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.01)  # only the likeliest token survives
    jobs = {key: (lambda p=prompt: answer(backend, p, GREEDY)) for key, prompt in PROMPTS.items()}
    jobs["penalised"] = lambda: answer(backend, PROMPTS["planets"], penalised)
    jobs["nucleus"] = lambda: answer(backend, PROMPTS["bread"], nucleus_of_one)
    jobs["hot"] = lambda: answer(backend, PROMPTS["capital"], GenerationSettings(max_new_tokens=5, temperature=1.5))
    jobs["warm"] = lambda: answer(backend, PROMPTS["bread"], GenerationSettings(max_new_tokens=9, temperature=0.8, top_p=0.9))
    together = run_together(jobs)

    assert backend.decoder.widest_batch >= 4  # they really shared forward passes
    for key in PROMPTS:
        assert together[key] == alone[key]
    assert together["nucleus"] == alone["bread"]
    penalised_alone = answer(backend, PROMPTS["planets"], penalised)
    assert together["penalised"] == penalised_alone
    unpenalised = answer(backend, PROMPTS["planets"], GenerationSettings(max_new_tokens=24, temperature=0))
    assert penalised_alone[0] != unpenalised[0]  # the penalty applied to its own row
    for key, limit in (("hot", 5), ("warm", 9), ("penalised", 24)):
        text, tokens = together[key]
        assert 0 < tokens <= limit and text.strip()


def test_a_prompt_longer_than_one_prefill_chunk_is_answered_as_alone(backend, alone):
    long_prompt = "Here are my notes. " + "The meeting moved to Tuesday and the budget is unchanged. " * 50 + "Summarise them."
    reference = answer(backend, long_prompt, GREEDY)
    assert len(backend.tokenizer(long_prompt)["input_ids"]) > 2 * backend.decoder.prefill_chunk
    together = run_together({
        "capital": lambda: answer(backend, PROMPTS["capital"], GREEDY),
        "long": lambda: answer(backend, long_prompt, GREEDY),
        "planets": lambda: answer(backend, PROMPTS["planets"], GREEDY),
    })
    assert together["long"] == reference
    assert together["capital"] == alone["capital"] and together["planets"] == alone["planets"]


def test_a_short_prompt_is_not_held_back_by_a_long_one_and_does_not_share_its_padding(backend, alone):
    """A long prompt (some 1,800 tokens) sent first must neither delay a short newcomer's first token nor
    widen its steps."""
    long_prompt = "Read these notes closely. " + "The meeting moved to Tuesday and the budget is unchanged. " * 150
    assert len(backend.tokenizer(long_prompt)["input_ids"]) > 12 * backend.decoder.prefill_chunk
    first_token: dict[str, float] = {}
    widths: list[list[int]] = []

    def timed(key: str, prompt: str, settings: GenerationSettings = GREEDY):
        def job():
            text, tokens = "", 0
            for delta in backend.stream(chat(prompt), settings, threading.Event()):
                first_token.setdefault(key, time.monotonic())
                widths.append([batch.width for batch in backend.decoder.batches])
                text, tokens = text + delta.text, tokens + delta.tokens
            return text, tokens
        return job

    counting = "Count from 1 to 300, separated by commas."
    counted_alone = answer(backend, counting, GenerationSettings(max_new_tokens=200, temperature=0))
    assert counted_alone[1] == 200  # it is still counting when the long prompt has been read
    decoder = backend.decoder
    prompt_reads: list[tuple[int, int]] = []  # (prompt tokens read in one pass, rows streaming meanwhile)

    class Watched:
        def __init__(self, model):
            self.model = model

        def __getattr__(self, name):
            return getattr(self.model, name)

        def __call__(self, input_ids, **kwargs):
            if input_ids.shape[0] == 1 and input_ids.shape[1] > 1:
                prompt_reads.append((input_ids.shape[1], decoder.rows))
            return self.model(input_ids=input_ids, **kwargs)

    decoder.model = Watched(decoder.model)
    try:
        together = run_together({"long": timed("long", long_prompt),
                                 "counting": timed("counting", counting, GenerationSettings(max_new_tokens=200, temperature=0))},
                                stagger_s=0.2)
    finally:
        decoder.model = decoder.model.model
    # While the count streams, the long prompt is read a little at a time, so each counted token waits little.
    assert any(rows for _, rows in prompt_reads)
    assert all(tokens <= decoder.busy_prefill_chunk for tokens, rows in prompt_reads if rows)
    assert first_token["counting"] < first_token["long"]  # it was read first, though it came second
    assert together["counting"] == counted_alone
    assert any(len(seen) == 2 for seen in widths)  # at one time both answered, each in its own batch
    assert all(min(seen) < 600 for seen in widths if seen)  # the short row never carried the long one's padding


def test_cancelling_one_request_leaves_the_others_untouched(backend, alone):
    cancel = threading.Event()

    def cancelled_after_two_pieces():
        received = 0
        for piece, delta in enumerate(backend.stream(chat(PROMPTS["bread"]), GenerationSettings(max_new_tokens=200, temperature=0), cancel)):
            received += delta.tokens
            if piece == 1:
                cancel.set()
        return received

    together = run_together({
        "capital": lambda: answer(backend, PROMPTS["capital"], GREEDY),
        "cancelled": cancelled_after_two_pieces,
        "planets": lambda: answer(backend, PROMPTS["planets"], GREEDY),
    }, stagger_s=0)
    assert together["cancelled"] < 10
    assert together["capital"] == alone["capital"] and together["planets"] == alone["planets"]
    assert wait_until_idle(backend)  # the cancelled row left the batch


def test_a_failing_request_fails_alone(backend, alone, monkeypatch):
    vocabulary = backend.model.config.vocab_size
    broken_sampling = GenerationSettings(max_new_tokens=16, temperature=float("nan"))
    doomed = GenerationSettings(max_new_tokens=40, temperature=0.5)
    real_choose, shared_steps = next_token._choose, []

    def fault_on_the_third_shared_step(logits, rows):
        """A fault inside one row's processing, in the middle of its answer, while the batch is shared."""
        if any(row.settings is doomed for row in rows):
            shared_steps.append(len(rows))
            if len(shared_steps) >= 3:
                raise RuntimeError("injected fault in one row")
        return real_choose(logits, rows)

    monkeypatch.setattr(next_token, "_choose", fault_on_the_third_shared_step)
    together = run_together({
        "capital": lambda: answer(backend, PROMPTS["capital"], GREEDY),
        "bad settings": lambda: answer(backend, PROMPTS["bread"], broken_sampling),
        "bad prompt": lambda: list(backend.decoder.generate([1, vocabulary + 7, 2], GREEDY, threading.Event())),
        "fails mid-answer": lambda: answer(backend, PROMPTS["bread"], doomed),
        "planets": lambda: answer(backend, PROMPTS["planets"], GREEDY),
    }, stagger_s=0)
    assert isinstance(together["bad settings"], GenerationError)
    assert isinstance(together["bad prompt"], GenerationError)
    assert isinstance(together["fails mid-answer"], GenerationError) and "injected fault" in str(together["fails mid-answer"])
    assert max(shared_steps) > 1  # the fault struck while other rows were in the same step
    assert together["capital"] == alone["capital"] and together["planets"] == alone["planets"]
    assert wait_until_idle(backend)  # failed rows left the batch instead of failing again at every step
    monkeypatch.undo()
    assert answer(backend, PROMPTS["bread"], GREEDY) == alone["bread"]  # and the model keeps serving


def wait_until_idle(backend, timeout_s: float = 10) -> bool:
    return wait_until(lambda: not backend.decoder.rows and not backend.decoder.waiting, timeout_s)


@pytest.mark.parametrize("temperature, top_p", [(1.5, 0.95), (1.2, 1.0)])
def test_sampled_tokens_follow_each_rows_nucleus(backend, temperature, top_p):
    """The fast draw (likeliest candidates first, then the tail) gives the nucleus's exact distribution."""
    import torch

    prompt = backend.tokenizer.apply_chat_template(chat("Write a poem about anything you like."), add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        scores = backend.model(input_ids=prompt).logits[0, -1].float()
    probabilities = (scores / temperature).softmax(dim=-1)
    nucleus = next_token._nucleus(probabilities[None], torch.tensor([top_p]))[0]
    nucleus /= nucleus.sum()
    candidates = probabilities.topk(next_token._CANDIDATES).indices
    tail_share = 1.0 - float(nucleus[candidates].sum())
    assert tail_share > 0.05  # the draw has to leave the candidates now and then, or this tests nothing

    torch.manual_seed(0)
    draws = torch.cat([next_token._draw(probabilities.expand(300, -1).contiguous(), torch.full((300,), top_p))
                       for _ in range(4)])
    assert bool((nucleus[draws] > 0).all())  # never outside the nucleus
    in_tail = 1.0 - float(torch.isin(draws, candidates).float().mean())
    spread = (tail_share * (1 - tail_share) / len(draws)) ** 0.5
    assert abs(in_tail - tail_share) < 4 * spread
    likeliest = int(nucleus.argmax())
    share = float((draws == likeliest).float().mean())
    assert abs(share - float(nucleus[likeliest])) < 4 * (float(nucleus[likeliest]) * (1 - float(nucleus[likeliest])) / len(draws)) ** 0.5


def test_rare_characters_cost_many_tokens_so_the_default_limit_is_counted_in_tokens(backend):
    """1,500 cuneiform signs pass the character limit (4,000) but are thousands of tokens for this tokenizer."""
    from arena.config import Limits

    cuneiform = "".join(chr(0x12000 + i % 900) for i in range(1500))
    assert len(cuneiform) < Limits().max_prompt_chars
    assert backend.prompt_tokens(chat(cuneiform)) > Limits().max_conversation_tokens
    assert backend.prompt_tokens(chat("What is the capital of France?")) < 50


def test_the_two_prompts_of_a_battle_are_read_one_after_the_other():
    """Least left to read first, but a battle's two prompts count together: read apart, with other prompts
    between them, one side started seconds after the other, and an anonymous battle waits for both."""
    def request(length: int, group: str | None = None) -> _Request:
        return _Request(list(range(length)), GREEDY, threading.Event(), group)

    first_side, alone, second_side, long_pair = request(31, "b1"), request(33), request(36, "b1"), request(5, "b2")
    other_side = request(900, "b2")
    order = prefill_order([first_side, alone, second_side, long_pair, other_side])
    assert order == [alone, first_side, second_side, long_pair, other_side]
    # Read: its partner is all that is left of the battle, and goes first of all, if it is not long
    assert prefill_order([alone, second_side], started={"b1"}, head_start=128) == [second_side, alone]
    follow_ups = [request(3000, "b3"), request(3000, "b3")]
    assert prefill_order([*follow_ups, alone], started={"b3"}, head_start=128) == [alone, *follow_ups]
    ungrouped = [request(31), request(33), request(36)]
    assert prefill_order(ungrouped[::-1]) == ungrouped  # as before for prompts outside battles

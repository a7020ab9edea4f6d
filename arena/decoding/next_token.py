"""Choosing each sequence's next token with its own decoding settings.

Rows of one batched forward pass belong to different contestants (greedy,
warm, nucleus, with or without a repetition penalty), so the choice is made
per row. Rows whose settings cannot give a distribution (a NaN temperature,
say) get an exception of their own instead of failing the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arena.config import GenerationSettings


_CANDIDATES = 256  # likeliest tokens a draw looks at first; nearly always the whole nucleus


class InvalidDistribution(ValueError):
    """The settings turned this row's scores into something that cannot be sampled."""


@dataclass
class RowState:
    """What a row's choice depends on besides its scores."""

    settings: GenerationSettings
    seen: torch.Tensor  # distinct token ids of the prompt and the answer so far, for the repetition penalty


def choose_next_tokens(logits: torch.Tensor, rows: list[RowState]) -> list[int | Exception]:
    """One token id (or the exception that prevented it) per row of `logits` [rows, vocab]."""
    try:
        return _choose(logits, rows)
    except Exception:  # noqa: BLE001 - retried row by row so the fault stays with its own row
        if len(rows) == 1:
            raise
    choices: list[int | Exception] = []
    for index, row in enumerate(rows):
        try:
            choices.extend(_choose(logits[index:index + 1], [row]))
        except Exception as exc:  # noqa: BLE001 - handed to that row's request
            choices.append(exc)
    return choices


def _choose(logits: torch.Tensor, rows: list[RowState]) -> list[int | Exception]:
    scores = logits.float()
    penalised = [i for i, row in enumerate(rows) if row.settings.repetition_penalty != 1.0]
    if penalised:
        scores = scores.clone()
        for index in penalised:
            _penalise_repeats(scores[index], rows[index])
    choices: list[int | Exception] = [0] * len(rows)
    greedy = [i for i, row in enumerate(rows) if row.settings.greedy]
    if greedy:
        for index, token in zip(greedy, scores[greedy].argmax(dim=-1).tolist()):
            choices[index] = token
    sampled = [i for i, row in enumerate(rows) if not row.settings.greedy]
    if sampled:
        temperatures = torch.tensor([rows[i].settings.temperature for i in sampled], dtype=scores.dtype)
        top_p = torch.tensor([rows[i].settings.top_p for i in sampled], dtype=scores.dtype)
        probabilities = (scores[sampled] / temperatures.unsqueeze(1)).softmax(dim=-1)
        usable = torch.isfinite(probabilities).all(dim=1) & (probabilities >= 0).all(dim=1) & (probabilities.sum(dim=1) > 0)
        drawn = iter(_draw(probabilities[usable], top_p[usable]).tolist()) if usable.any() else iter(())
        for index, ok in zip(sampled, usable.tolist()):
            choices[index] = next(drawn) if ok else InvalidDistribution(
                f"no token can be sampled with temperature={rows[index].settings.temperature}, "
                f"top_p={rows[index].settings.top_p}")
    return choices


def _penalise_repeats(scores: torch.Tensor, row: RowState) -> None:
    """CTRL's penalty, as transformers applies it: tokens already present become less likely."""
    penalty = row.settings.repetition_penalty
    previous = scores[row.seen]
    scores[row.seen] = torch.where(previous < 0, previous * penalty, previous / penalty)


def _draw(probabilities: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """One token per row from its nucleus, reading the whole vocabulary only when the draw needs it.

    Sorting 49k probabilities per row per step cost more than the batched
    forward pass itself, so the draw starts from the likeliest candidates.
    When they hold `top_p` of the mass the nucleus lies among them; otherwise
    the nucleus also has a tail, drawn from with its exact share of the mass.
    """
    top, ids = probabilities.topk(min(_CANDIDATES, probabilities.shape[-1]), dim=-1)
    mass_before = top.cumsum(dim=-1) - top
    head = top.masked_fill(mass_before >= top_p.unsqueeze(1), 0.0)  # the top token always stays
    drawn = ids.gather(1, torch.multinomial(head, 1)).squeeze(1)
    for row in (top.sum(dim=-1) < top_p).nonzero().flatten().tolist():
        nucleus = _nucleus(probabilities[row:row + 1], top_p[row:row + 1])[0]
        head_mass = float(head[row].sum())
        tail_mass = float(nucleus.sum()) - head_mass
        if tail_mass > 0 and float(torch.rand(())) * (head_mass + tail_mass) >= head_mass:
            drawn[row] = torch.multinomial(nucleus.index_fill(0, ids[row], 0.0), 1)[0]
    return drawn


def _nucleus(probabilities: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Probabilities restricted to each row's smallest set of likeliest tokens holding `top_p` of the mass."""
    trimmed = top_p < 1.0
    if not trimmed.any():
        return probabilities
    probabilities = probabilities.clone()
    rows = probabilities[trimmed]
    ordered, order = rows.sort(dim=-1, descending=True)
    mass_before = ordered.cumsum(dim=-1) - ordered
    ordered = ordered.masked_fill(mass_before >= top_p[trimmed].unsqueeze(1), 0.0)
    probabilities[trimmed] = torch.zeros_like(rows).scatter(-1, order, ordered)
    return probabilities

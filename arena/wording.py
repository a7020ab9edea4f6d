"""How counts read in messages, so "1 vote" and "2 votes" are spelt one way everywhere."""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """`1 vote`, `2 votes`, `25,938 votes`: the noun's plural is its singular plus "s"."""
    return f"{number:,} {noun if number == 1 else noun + 's'}"

"""Words the library and the page share, so "1 vote" and "2 votes", or the way back to a new round, read one way."""

from __future__ import annotations


def counted(number: int, noun: str) -> str:
    """`1 vote`, `2 votes`, `25,938 votes`: the noun's plural is its singular plus "s"."""
    return f"{number:,} {noun if number == 1 else noun + 's'}"


NEW_ROUND = "Type a prompt to start a new round."

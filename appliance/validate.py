"""Numbers in query strings and headers. Request bodies are checked by their types
(:mod:`appliance.bodies`), engine options by theirs (:mod:`engines.schema`)."""
from __future__ import annotations


def parse_decimal(text: str, max_digits: int = 18) -> int | None:
    """A non-negative ASCII decimal, else None. ``str.isdigit`` alone accepts '²' and other digits
    ``int`` refuses, and ``int`` refuses more than 4300 digits: both were 500s."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)

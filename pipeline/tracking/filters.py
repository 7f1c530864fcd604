"""MLflow filter strings, and the words of an MLflow error that a caller may handle."""

from __future__ import annotations


def equals(field: str, value) -> str:
    """`field = 'value'` for an MLflow filter string. Its grammar has no escape: a value holding a quote is
    put in the other kind; one holding both matches any character there (LIKE's _), and the caller compares."""
    value = str(value)
    if "'" not in value:
        return f"{field} = '{value}'"
    if '"' not in value:
        return f'{field} = "{value}"'
    return f"{field} LIKE '{value.replace(chr(39), '_').replace(chr(34), '_')}'"


def duplicate_key(e: Exception) -> bool:
    """The race `log_input` retries: another process inserted the same row first (sqlite or PostgreSQL words)."""
    text = str(e).lower()
    return "unique constraint" in text or "duplicate key" in text or "already exists" in text


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

"""The issue's targets, each a named pass/fail judgement kept in the results."""

from typing import Any


def target(name: str, value: Any, limit: str, passed: bool) -> dict[str, Any]:
    """One target: what was measured, the limit as the issue words it, and the verdict."""
    return {"name": name, "value": value, "limit": limit, "pass": bool(passed)}


def verdict(passed: bool | None) -> str:
    if passed is None:
        return "-"
    return "PASS" if passed else "FAIL"

"""Select rows of the tidy results frame with `key=value[,value...]` filters (the `--filter` option)."""

from __future__ import annotations

import pandas as pd

from kd.errors import KdError, unknown_choice


def parse_filter(text: str) -> tuple[str, list[str]]:
    """`method=fitnet,logits` -> ("method", ["fitnet", "logits"])."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not sep or not key or not values:
        raise KdError(f"--filter expects KEY=VALUE[,VALUE...] (e.g. teacher=rcan or method=fitnet,logits), "
                      f"got '{text}'.")
    return key, values


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def filter_runs(df: pd.DataFrame, filters: list[str]) -> pd.DataFrame:
    """Rows matching every filter; a filter's values are alternatives. Values compare as text, so `seed=0`
    and `finished=True` work; a missing value matches `none`. A filter that leaves nothing is a `KdError`
    listing the values present for its key."""
    selected = df
    for text in filters:
        key, values = parse_filter(text)
        if key not in df.columns:
            raise unknown_choice("--filter key", key, df.columns)
        as_text = selected[key].map(_as_text)
        wanted = {v.lower() for v in values}
        kept = selected[as_text.str.lower().isin(wanted)]
        if kept.empty:
            present = sorted(set(as_text), key=lambda v: (len(v), v) if v.isdigit() else (0, v))
            shown = ", ".join(present) if present else "(none)"
            earlier = " after the filters before it" if selected is not df else ""
            raise KdError(f"--filter {text} matches no results{earlier}; {key} values present: {shown}.")
        selected = kept
    return selected

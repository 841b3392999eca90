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


# What the no-KD run a KD run pairs with shares with it among the tidy frame's columns (the report pairs on the
# whole configuration and the seed).
BASELINE_KEYS = ("student", "profile", "scale", "steps", "seed")


def filter_runs(df: pd.DataFrame, filters: list[str]) -> pd.DataFrame:
    """Rows matching every filter; a filter's values are alternatives. Values compare as text, so `seed=0`
    and `finished=True` work; a missing value matches `none`. `tag=a` keeps the runs tagged a (among others).
    A `teacher=` filter also keeps the no-KD runs (which have no teacher) that pair with the KD runs it keeps
    (same student, profile, scale, steps and seed): they are those runs' baselines. A filter that leaves nothing is a `KdError`
    listing the values present for its key."""
    selected = df
    for text in filters:
        key, values = parse_filter(text)
        column = "tags" if key == "tag" else key
        if column not in df.columns:
            raise unknown_choice("--filter key", key, [*df.columns, "tag"])
        wanted = {v.lower() for v in values}
        if key == "tag":
            present = selected["tags"].map(lambda tags: {t.lower() for t in _as_text(tags).split(",") if t})
            kept = selected[present.map(lambda tags: bool(tags & wanted))]
            as_text = pd.Series(sorted(set().union(*present)) if len(present) else [], dtype=object)
        else:
            as_text = selected[column].map(_as_text)
            kept = selected[as_text.str.lower().isin(wanted)]
            if key == "teacher" and "method" in selected.columns:
                kept = pd.concat([kept, _baselines(selected, kept)]).sort_index()
        if kept.empty:
            present = sorted(set(as_text), key=lambda v: (len(v), v) if v.isdigit() else (0, v))
            shown = ", ".join(present) if present else "(none)"
            earlier = " after the filters before it" if selected is not df else ""
            raise KdError(f"--filter {text} matches no results{earlier}; {key} values present: {shown}.")
        selected = kept
    return selected


def _baselines(frame: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """The no-KD rows of `frame` not in `kept` that share BASELINE_KEYS with a KD row of `kept`."""
    keys = [key for key in BASELINE_KEYS if key in frame.columns]
    shapes = {tuple(_as_text(v) for v in row) for row in kept[kept["method"] != "none"][keys].itertuples(index=False)}
    none = frame[(frame["method"] == "none") & ~frame.index.isin(kept.index)]
    return none[[tuple(_as_text(v) for v in row) in shapes for row in none[keys].itertuples(index=False)]]

"""Rendering hit-quality reports: a text table, a PNG plot, and TOML settings updates."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import load_settings
from ..errors import ConfigError
from ..tomlfile import parse_toml, read_text

__all__ = ["format_rate", "format_table", "write_plot", "write_settings", "write_threshold"]


def format_rate(value: float | None, digits: int = 1) -> str:
    """A rate as a percentage, or ``-`` when it is undefined."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _row(mark: str, r: Mapping[str, Any]) -> str:
    threshold = "-" if r.get("threshold") is None else f"{r['threshold']:.3f}"
    hits = r["true_hits"] + r["false_hits"]
    return (
        f"{mark:1} {threshold:>9} {format_rate(r['recall']):>8} "
        f"{format_rate(r['false_hit_rate']):>8} {format_rate(r['precision']):>9} "
        f"{hits:>7} {r['true_hits']:>7} {r['false_hits']:>7}"
    )


def _header(first: str = "threshold") -> str:
    return (
        f"  {first:>9} {'recall':>8} {'FHR':>8} {'precision':>9} {'hits':>7} {'true':>7} "
        f"{'false':>7}"
    )


def format_table(report: Mapping[str, Any], *, full_sweep: bool = True) -> str:
    """The report as text: the default row (marked *), the sweep, kinds and contexts."""
    lines: list[str] = []
    decision = report["decision"]
    ds = report["dataset"]
    name = ds.get("name") or ds.get("pairs") or ds.get("contexts") or "pairs"
    if "sweep" in report:
        d = report["default"]
        lines.append(
            f"{name}: {d['n_pos']} positive, {d['n_neg']} negative pairs"
            + (f" ({ds['n_skipped']} skipped)" if ds.get("n_skipped") else "")
            + f"; decision {decision['name']} at threshold {decision['threshold']}"
        )
        lines.append(_header())
        lines.append(_row("*", d) + "   <- shipped default")
        sweep = report["sweep"] if full_sweep else []
        for r in sweep:
            lines.append(_row("", r))
        points = [p for p in report.get("operating_points", []) if "recall" in p]
        if points:
            lines.append("")
            lines.append("best recall within a false-hit rate (lowest threshold, 0.001 grid):")
            for p in points:
                lines.append(
                    f"  FHR <= {format_rate(p['max_false_hit_rate'])}: threshold "
                    f"{p['threshold']:.3f}, recall {format_rate(p['recall'])}, "
                    f"FHR {format_rate(p['false_hit_rate'])}, "
                    f"precision {format_rate(p['precision'])}"
                )
        kinds = report.get("by_kind") or {}
        if kinds:
            lines.append("")
            lines.append(f"by kind at the default threshold {decision['threshold']}:")
            width = max(9, *(len(k) for k in kinds))
            lines.append(f"  {'kind':>{width}}" + _header()[11:])
            for kind, r in kinds.items():
                lines.append(f"  {kind:>{width}}" + _row("", r)[11:])
    contexts = report.get("contexts")
    if contexts:
        if lines:
            lines.append("")
        lines.append(
            f"context cases: {contexts['n_cases']} ({contexts['n_neg']} must miss, "
            f"{contexts['n_pos']} may hit); false hits {contexts['false_hits']} "
            f"(FHR {format_rate(contexts['false_hit_rate'])}), hits on label-1 cases "
            f"{contexts['true_hits']}, cases with any candidate {contexts['with_candidate']}"
        )
        for kind, r in (contexts.get("by_kind") or {}).items():
            lines.append(
                f"  {kind}: {r['n_pos'] + r['n_neg']} cases, false hits {r['false_hits']}, "
                f"hits on label-1 {r['true_hits']}"
            )
    runtime = report.get("runtime")
    if runtime:
        lines.append("")
        lines.append(
            f"{runtime['seconds']:.1f} s; {runtime['texts_embedded']} texts embedded in "
            f"{runtime['embedding_batches']} batches (largest {runtime['largest_batch']})"
        )
    return "\n".join(lines)


def write_plot(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Recall against false-hit rate over the sweep (left) and both against threshold (right).

    Needs the optional ``plot`` extra (matplotlib); ``ConfigError`` without it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            f"plots need matplotlib: pip install 'semcache[plot]' (cannot write {path})"
        ) from exc

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep: Sequence[Mapping[str, Any]] = report.get("sweep") or []
    default: Mapping[str, Any] = report.get("default") or {}
    name = report["dataset"].get("name") or "pairs"
    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    thresholds = [r["threshold"] for r in sweep]
    recall = [r["recall"] for r in sweep]
    fhr = [r["false_hit_rate"] for r in sweep]
    if default.get("false_hit_rate") is not None:
        left.plot(fhr, recall, "-o", markersize=2.5, color="tab:blue", label="threshold sweep")
        left.plot(
            [default["false_hit_rate"]],
            [default["recall"]],
            "*",
            markersize=14,
            color="tab:red",
            label=f"shipped default ({default['threshold']})",
        )
        for r in sweep:
            if round(r["threshold"] * 100) % 5 == 0 and r["threshold"] >= 0.7:
                left.annotate(
                    f"{r['threshold']:.2f}",
                    (r["false_hit_rate"], r["recall"]),
                    fontsize=6,
                    textcoords="offset points",
                    xytext=(3, -8),
                )
        left.set_xlabel("false-hit rate (hits on label-0 pairs)")
        left.set_ylabel("hit recall (hits on label-1 pairs)")
        left.set_xlim(left=0)
        left.set_ylim(0, 1.02)
        left.grid(alpha=0.3)
        left.legend(loc="lower right", fontsize=8)
        left.set_title("recall vs false-hit rate", fontsize=10)
    else:
        left.text(0.5, 0.5, "no label-0 pairs:\nno false-hit rate", ha="center", va="center")
        left.set_axis_off()
    if sweep:
        right.plot(thresholds, recall, color="tab:blue", label="recall")
        if any(v is not None for v in fhr):
            right.plot(
                thresholds,
                [float("nan") if v is None else v for v in fhr],
                color="tab:orange",
                label="false-hit rate",
            )
        right.axvline(default.get("threshold", 0.9), color="tab:red", ls="--", lw=1)
        right.set_xlabel("cosine threshold")
        right.set_ylim(0, 1.02)
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
        right.set_title("rates by threshold", fontsize=10)
    fig.suptitle(f"semcache hit quality: {name}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


_TABLE = re.compile(r"^\s*\[")


def _toml_value(value: float | int | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for anything a setting holds
    return repr(value)


def write_settings(
    path: str | os.PathLike[str], values: Mapping[str, float | int | str | bool]
) -> Path:
    """Set ``key = value`` for each of ``values`` in a TOML settings file, keeping every other
    line as it is.

    The file is created if absent; each key is replaced where it stands, or added before the
    first table. The result is checked with ``load_settings`` before it replaces the file.
    """
    out = Path(path)
    text = ""
    if out.exists():
        text = read_text(out, "config file")
        parse_toml(text, out, "config file")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for key, value in values.items():
        line = f"{key} = {_toml_value(value)}\n"
        first_table = next((i for i, s in enumerate(lines) if _TABLE.match(s)), len(lines))
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        where = next((i for i in range(first_table) if pattern.match(lines[i])), None)
        if where is not None:
            lines[where] = line
        else:
            lines.insert(first_table, line)
    names = ", ".join(values)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(lines), encoding="utf-8")
        try:
            load_settings(config_file=tmp, environ={})
        except ConfigError as exc:
            raise ConfigError(
                f"{out} would not be a valid config after setting {names}: {exc.message}"
            ) from exc
        os.replace(tmp, out)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {out}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_threshold(path: str | os.PathLike[str], threshold: float) -> Path:
    """Set ``threshold = X`` in a TOML settings file (``write_settings``)."""
    return write_settings(path, {"threshold": threshold})

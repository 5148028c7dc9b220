"""Plots that show *why* a model localizes or not: training curves, clip×word similarity, grounding timelines.

Matplotlib with the Agg backend (no display needed); every function writes a PNG atomically and returns its path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, out: str | os.PathLike, dpi: int = 110, make_parent: bool = True, command: str = "plot",
                **kwargs) -> Path:
    """Write ``fig`` to ``out`` atomically and close it; on any failure nothing is left behind.

    Why: a plot written in place and interrupted (or refused by matplotlib) left a half-written PNG or a
    ``.tmp`` sibling. The format follows ``out``'s extension (none: PNG); an extension matplotlib cannot write
    is a :class:`~locvtp.errors.UsageError` naming the file, raised before anything is written. ``out`` is
    written as ``command``'s own file (:func:`locvtp.files.owned_file`): a file there that locvtp did not write
    is refused (:class:`~locvtp.errors.NotOwnedError`), never replaced.
    """
    from locvtp.files import check_file_output, owned_file

    out = Path(out)
    try:
        fmt = check_figure_path(out)
        check_file_output(out, command, "", make_parent=make_parent)
        if make_parent:
            out.parent.mkdir(parents=True, exist_ok=True)
        with owned_file(out, command, suffix=out.suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt, **kwargs)
    finally:
        plt.close(fig)
    return out


def check_figure_path(out: str | os.PathLike) -> str:
    """The matplotlib format for ``out`` (its extension; none: ``png``), or a ``UsageError`` naming ``out``
    when it is a directory or its extension is not an image format matplotlib writes."""
    from locvtp.errors import UsageError

    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out}: is a directory; give a file name, e.g. {out / 'plot.png'}")
    fmt = out.suffix[1:].lower() or "png"
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise UsageError(f"{out}: cannot write a .{fmt} figure; use one of "
                         f"{', '.join('.' + k for k in sorted(supported))}")
    return fmt


def _save(fig, out: str | os.PathLike) -> Path:
    return save_figure(fig, out, bbox_inches="tight")


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a run's metrics.jsonl; a torn last line (run killed mid-write) is ignored, not fatal."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def plot_training_curves(runs: Mapping[str, str | os.PathLike], out: str | os.PathLike,
                         keys: Sequence[str] = ("total", "coarse", "fine", "temporal")) -> Path:
    """One panel per loss term, one line per run (runs: name -> metrics.jsonl)."""
    data = {name: read_metrics_jsonl(p) for name, p in runs.items()}
    present = [k for k in keys if any(_find(r, k) is not None for rows in data.values() for r in rows)]
    if not present:
        raise ValueError(f"no loss terms {list(keys)} found in {list(runs.values())}")
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present):
        for name, rows in data.items():
            pts = [(r["step"], _find(r, key)) for r in rows if "step" in r and _find(r, key) is not None]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, label=name)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("pre-training losses")
    return _save(fig, out)


def _find(row: Mapping, key: str):
    """Metrics rows may name a term 'fine', 'loss/fine' or 'train/fine'."""
    for k in (key, f"loss/{key}", f"train/{key}", f"loss_{key}"):
        v = row.get(k)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def plot_similarity_heatmaps(sims: Mapping[str, np.ndarray], words: Sequence[str], out: str | os.PathLike,
                             clip_times: Sequence[float] | None = None, gt: tuple[float, float] | None = None,
                             title: str = "") -> Path:
    """Clip×word cosine similarity [T, L] under each model, side by side (shared colour scale)."""
    names = list(sims)
    vmin = min(float(np.min(s)) for s in sims.values())
    vmax = max(float(np.max(s)) for s in sims.values())
    fig, axes = plt.subplots(1, len(names), figsize=(0.45 * len(words) * len(names) + 2.5, 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        sim = np.asarray(sims[name])
        im = ax.imshow(sim, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(words)))
        ax.set_xticklabels(words, rotation=60, ha="right", fontsize=8)
        if clip_times is not None:
            ax.set_yticks(range(len(clip_times)))
            ax.set_yticklabels([f"{t:.0f}s" for t in clip_times], fontsize=7)
        ax.set_ylabel("clip")
        ax.set_title(name)
        if gt is not None and clip_times is not None:
            inside = [i for i, t in enumerate(clip_times) if gt[0] <= t < gt[1]]
            if inside:
                ax.axhspan(inside[0] - 0.5, inside[-1] + 0.5, color="white", alpha=0.15, lw=0)
                ax.axhline(inside[0] - 0.5, color="w", lw=1)
                ax.axhline(inside[-1] + 0.5, color="w", lw=1)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_grounding_timeline(curves: Mapping[str, np.ndarray], windows: np.ndarray, gt: tuple[float, float],
                            predictions: Mapping[str, tuple[float, float]], query: str,
                            out: str | os.PathLike, duration: float | None = None) -> Path:
    """Per-clip score curve of a query under each model, with the ground-truth and predicted windows."""
    windows = np.asarray(windows, dtype=float)
    centers = windows.mean(axis=1)
    names = list(curves)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.9 * len(names) + 0.6), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        c = np.asarray(curves[name], dtype=float)
        ax.plot(centers, c, marker=".", color="tab:blue", label="clip score")
        ax.axvspan(gt[0], gt[1], color="tab:green", alpha=0.25, label="ground truth")
        if name in predictions and predictions[name] is not None:
            ps, pe = predictions[name]
            ax.axvspan(ps, pe, ymin=0.0, ymax=0.12, color="tab:red", alpha=0.8, label="prediction")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    if duration:
        axes[-1, 0].set_xlim(0, duration)
    fig.suptitle(f"query: {query!r}", fontsize=10)
    return _save(fig, out)

"""Pictures: mel spectrograms side by side, cross-attention maps, loss curves.

Functions return matplotlib figures (Agg backend, no display needed); the caller saves or
logs them and closes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def mel_figure(mels: Mapping[str, np.ndarray], title: str = "", hop_seconds: float = 256 / 16000):
    """One panel per mel, side by side. ``mels`` maps a label to a (frames, bins) log-mel."""
    items = [(k, np.asarray(v)) for k, v in mels.items() if v is not None]
    fig, axes = plt.subplots(1, len(items), figsize=(4.2 * len(items), 3.2), squeeze=False)
    vmin = min(float(m.min()) for _, m in items)
    vmax = max(float(m.max()) for _, m in items)
    for ax, (label, mel) in zip(axes[0], items):
        im = ax.imshow(
            mel.T,
            origin="lower",
            aspect="auto",
            vmin=vmin,
            vmax=vmax,
            cmap="magma",
            extent=(0, mel.shape[0] * hop_seconds, 0, mel.shape[1]),
        )
        ax.set_title(label)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel bin")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, label="log10 mel")
    if title:
        fig.suptitle(title, y=1.04)
    return fig


def attention_figure(attention: np.ndarray, title: str = "cross-attention"):
    """A (decoder steps, encoder frames) alignment; a clean diagonal means the model follows the source."""
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(
        np.asarray(attention).T, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest"
    )
    ax.set_xlabel("decoder step")
    ax.set_ylabel("encoder frame")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def curves_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "", ylabel: str = "loss"
):
    """Lines from ``{label: (steps, values)}``, e.g. train and validation loss against step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (x, y) in curves.items():
        ax.plot(x, y, marker="o" if len(x) < 20 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    else:  # e.g. a run without the learning-rate monitor
        ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    """Save a figure as PNG and close it."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def bench_figure(
    panels: Sequence[tuple[str, Sequence[tuple[str, float, str]], float | None, str]],
    memory: tuple[Sequence[float], Sequence[float], float, str] | None = None,
    title: str = "",
):
    """The benchmark at a glance: one panel of horizontal bars per section, plus memory.

    ``panels``: ``(title, bars, goal, xlabel)`` with bars ``(label, value, kind)``, kind one of
    ``ours`` (what counts towards the goal), ``other`` (a rung or option shown for comparison) or
    ``rejected`` (over a quality bound); ``goal`` draws a dashed line. ``memory``: ``(minutes,
    MiB, limit MiB, ylabel)`` for the long-audio panel.
    """
    colours = {"ours": "#1f77b4", "other": "#9aa7b1", "rejected": "#d9a3a3"}
    count = len(panels) + (memory is not None)
    fig, axes = plt.subplots(1, count, figsize=(5.2 * count, 3.6), squeeze=False)
    for ax, (name, bars, goal, xlabel) in zip(axes[0], panels):
        labels = [b[0] for b in bars][::-1]
        values = [b[1] for b in bars][::-1]
        kinds = [b[2] for b in bars][::-1]
        ax.barh(
            labels,
            values,
            color=[colours[k] for k in kinds],
            hatch=None,
            edgecolor=["#b03030" if k == "rejected" else "none" for k in kinds],
        )
        for y, (value, kind) in enumerate(zip(values, kinds)):
            note = " (over bound)" if kind == "rejected" else ""
            ax.text(value, y, f" {value:.2f}x{note}", va="center", fontsize=8)
        if goal is not None:
            ax.axvline(goal, color="#444", linestyle="--", linewidth=1)
            ax.text(goal, len(bars) - 0.45, f" goal {goal:g}x", fontsize=8, color="#444")
        ax.set_xlim(0, max([*values, goal or 0]) * 1.35)
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    if memory is not None:
        ax = axes[0][-1]
        minutes, mib, limit, ylabel = memory
        ax.plot(minutes, mib, marker="o")
        ax.axhline(limit, color="#444", linestyle="--", linewidth=1)
        ax.text(minutes[0], limit, f"limit {limit / 1024:g} GiB", fontsize=8, color="#444", va="bottom")
        ax.set_ylim(0, max([*mib, limit]) * 1.15)
        ax.set_xlabel("input minutes")
        ax.set_ylabel(ylabel)
        ax.set_title("long audio: peak memory")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig

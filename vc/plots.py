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
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    """Save a figure as PNG and close it."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)

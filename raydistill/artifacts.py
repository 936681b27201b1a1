"""Files a trial leaves behind: the distilled set (.pt), result JSON, and PNG figures."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from raydistill.pipeline import TrialResult  # noqa: E402


def export_distilled(result: TrialResult, path: Path) -> Path:
    """{'images': float32 (n,C,H,W) in [0,1] units before normalisation, 'labels', 'meta'};
    loads with torch.load(path, weights_only=True)."""
    torch.save({"images": result.images.float().contiguous(), "labels": result.labels.long(), "meta": result.meta}, path)
    return path


def write_result(result: TrialResult, path: Path) -> Path:
    path.write_text(json.dumps(result.summary(), indent=2))
    return path


def image_grid(images: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path, max_per_class: int = 10) -> Path:
    """One row per class, up to max_per_class images each, clipped to [0, 1] for display."""
    rows = [images[labels == c][:max_per_class] for c in range(len(classes))]
    cols = max(1, max(len(r) for r in rows))
    fig, axes = plt.subplots(len(classes), cols, figsize=(cols * 1.1, len(classes) * 1.1), squeeze=False)
    for c, row in enumerate(rows):
        for j in range(cols):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(row):
                img = row[j].clamp(0, 1).permute(1, 2, 0).numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        axes[c, 0].set_title(classes[c], fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def confusion_figure(result: TrialResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay(np.asarray(result.metrics["confusion"]), display_labels=result.classes).plot(
        ax=ax, colorbar=False, xticks_rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def roc_figure(result: TrialResult, path: Path, positive: int) -> Path:
    """Binary: the positive class's ROC; more classes: one-vs-rest curve per class."""
    fig, ax = plt.subplots(figsize=(5, 5))
    targets = [positive] if len(result.classes) == 2 else range(len(result.classes))
    for c in targets:
        RocCurveDisplay.from_predictions(result.y_test == c, result.proba[:, c], name=result.classes[c], ax=ax,
                                         plot_chance_level=c == targets[0])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_all(result: TrialResult, out: Path, positive: int) -> dict[str, Path]:
    """Every artifact of a trial into `out`; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"result.json": write_result(result, out / "result.json"),
             "confusion.png": confusion_figure(result, out / "confusion.png"),
             "roc.png": roc_figure(result, out / "roc.png", positive)}
    if len(result.labels):
        files["distilled.pt"] = export_distilled(result, out / "distilled.pt")
        files["distilled.png"] = image_grid(result.images, result.labels, result.classes, out / "distilled.png")
    return files

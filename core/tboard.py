"""TensorBoard curves of a training run, and the FD/IS of its evaluated checkpoints (optional: ``pip install -e
'.[tensorboard]'``; config key ``tensorboard``).

The config key reaches the training jobs as the environment variable ``DIFFUSION_TENSORBOARD`` (set by the
workflow's planning, rules/common.smk, and inherited by local and SLURM jobs alike), not as a job parameter:
turning the curves on or off must not make Snakemake retrain models whose results already exist. The events go
to ``paths.tensorboard_dir`` (``<model>/r<k>/tensorboard``), one folder per model and replicate, so that
``tensorboard --logdir <results>/<study>/models`` shows every run of a study. A resumed run opens the writer
with ``purge_step`` just after the resumed step: TensorBoard drops the earlier attempt's events after that step,
so the curves have no duplicate steps.

Free of heavy imports (planning imports ``available``); torch's writer is imported only when a run opens one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from core import paths

ENV = "DIFFUSION_TENSORBOARD"
INSTALL = "pip install -e '.[tensorboard]' (or: pip install tensorboard)"


def available() -> bool:
    """Whether the ``tensorboard`` package (which torch.utils.tensorboard writes through) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def requested() -> bool:
    """Whether this job was asked to write TensorBoard events (``DIFFUSION_TENSORBOARD=1``)."""
    return os.environ.get(ENV, "0") == "1"


class Board:
    """A ``SummaryWriter`` on ``log_dir`` that continues a run resumed at ``step`` (``purge_step``)."""

    def __init__(self, log_dir: str | os.PathLike[str], step: int = 0) -> None:
        if not available():
            raise ImportError(f"{ENV}=1 (config key tensorboard) needs the tensorboard package: {INSTALL}")
        from torch.utils.tensorboard import SummaryWriter

        Path(log_dir).mkdir(parents=True, exist_ok=True)
        # the resumed state logged its own step already: events after it belong to the attempt being replaced
        self.writer = SummaryWriter(str(log_dir), purge_step=step + 1 if step > 0 else None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image_grid(self, tag: str, step: int, images: Any) -> None:
        """uint8 NHWC ``images`` (numpy) as one image event of ``tag`` (TensorBoard tiles them)."""
        self.writer.add_images(tag, images, step, dataformats="NHWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_board(log_dir: str | os.PathLike[str], step: int, main: bool) -> Board | None:
    """The run's board when asked for (``requested``) on the main rank, else None."""
    return Board(log_dir, step) if main and requested() else None


def log_evaluation(sample_provenance: dict[str, Any], values: dict[str, float], images: Any = None) -> Path | None:
    """When asked for, the metrics of an evaluated checkpoint as scalars ``eval/<experiment>/r<k>/<name>`` at the
    checkpoint's step, beside the curves of the model replicate that drew the samples (its checkpoint's
    ``<model>/r<k>/tensorboard``), and ``images`` (uint8 NHWC: the first samples of the evaluated file) as the grid
    ``eval/<experiment>/r<k>/samples`` at that step; each evaluation job adds its own small events file. Returns
    the folder."""
    if not requested():
        return None
    log_dir = Path(sample_provenance["checkpoint"]).parent.parent / paths.TENSORBOARD  # <model>/r<k>/ckpt/<step>.pt
    board = Board(log_dir)
    tag = f"eval/{sample_provenance['experiment']}/r{sample_provenance['replicate']}"
    step = int(sample_provenance["checkpoint_step"])
    board.scalars(step, {f"{tag}/{k}": v for k, v in values.items()})
    if images is not None and len(images):
        board.image_grid(f"{tag}/samples", step, images)
    board.close()
    return log_dir

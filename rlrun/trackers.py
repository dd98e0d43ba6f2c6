"""Optional experiment trackers beside TensorBoard: Weights & Biases (``logger.wandb=true``, extra ``wandb``).

A :class:`WandbTracker` mirrors what the :class:`~rlrun.logger.Logger` writes to TensorBoard (every scalar, against
env steps as ``global_step``), the resolved config and the summary; ``rlrun eval --video`` adds its mp4s to the
same W&B run. Its files go under ``<run_dir>/wandb/``. With no API key or no network, ``logger.wandb_mode=auto``
records offline (``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later); TensorBoard stays the default
and is written either way.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlrun.checks import ConfigError
from rlrun.logger import shown

ID_FILE = "wandb-run-id"
"""``<run_dir>/wandb/<ID_FILE>``: the W&B run id, so a resume or a later ``rlrun eval --video`` continues that run."""


def wandb_mode(requested: str) -> tuple[str, str]:
    """The mode W&B runs in and why: ``online`` or ``offline`` as asked, or for ``auto`` ``WANDB_MODE`` when set,
    else online only with an API key (``WANDB_API_KEY`` or ``wandb login``'s netrc entry) and the server reachable."""
    if requested != "auto":
        return requested, f"logger.wandb_mode={requested}"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    if not (os.environ.get("WANDB_API_KEY") or _netrc_has(host)):
        return "offline", "no API key: wandb login"
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError:
        return "offline", f"{host} not reachable"
    return "online", "API key and network"


def _netrc_has(host: str) -> bool:
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_available(logger_cfg: Any) -> None:
    """Refuse ``logger.wandb=true`` before a run starts when the ``wandb`` package is missing (a run trained with
    it can still be evaluated without it)."""
    if logger_cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError('logger.wandb=true needs Weights & Biases, which is not installed: pip install '
                          '"rlrun[wandb]" (or logger.wandb=false: TensorBoard records the run either way).')


def open_tracker(cfg: Any, run_dir: Path, config: dict[str, Any], resuming: bool = False) -> WandbTracker | None:
    """The run's W&B tracker when ``logger.wandb=true``, else None."""
    return WandbTracker(cfg.logger, run_dir, config, resuming) if cfg.logger.wandb else None


def upload_videos(logger_cfg: Any, run_dir: Path, paths: list[Path], step: int) -> str:
    """Add ``rlrun eval --video`` mp4s to the run's W&B run (as ``eval/video`` at ``step``); what happened, in
    words, for the eval report."""
    if importlib.util.find_spec("wandb") is None:
        return 'videos not uploaded: wandb is not installed (pip install "rlrun[wandb]")'
    tracker = WandbTracker(logger_cfg, run_dir, config=None, resuming=True)
    try:
        tracker.videos(paths, step)
    finally:
        tracker.close()
    return f"{len(paths)} video(s) added as eval/video at step {step:,}; {tracker.where()[1]}"


def sweep_group(run_dir: Path) -> str | None:
    """The W&B group of a run inside a Hydra sweep (its folder holds ``multirun.yaml``): the sweep folder's name."""
    sweep = run_dir.resolve().parent
    return str(Path(sweep.parent.name) / sweep.name) if (sweep / "multirun.yaml").is_file() else None


class WandbTracker:
    """One W&B run for one rlrun run folder.

    ``config``: the flat resolved config; ``step``: where a resumed run continues (W&B keeps the first run's
    history and appends). Console output of W&B itself is silenced: rlrun says where the run went.
    """

    def __init__(self, logger_cfg: Any, run_dir: Path, config: dict[str, Any] | None, resuming: bool = False):
        import wandb  # present: check_available refused logger.wandb=true without it
        self.mode, self.why = wandb_mode(logger_cfg.wandb_mode)
        folder = Path(run_dir) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_path = folder / ID_FILE
        run_id = id_path.read_text().strip() if id_path.is_file() else secrets.token_hex(4)
        id_path.write_text(run_id + "\n")
        self.run = wandb.init(
            project=logger_cfg.wandb_project, entity=logger_cfg.wandb_entity,
            group=logger_cfg.wandb_group or sweep_group(Path(run_dir)), name=Path(run_dir).name, id=run_id,
            resume="allow" if resuming else None, dir=str(run_dir), config=config, mode=self.mode,
            reinit="create_new", settings=wandb.Settings(silent=True, console="off"),
        )
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def where(self) -> tuple[str, str]:
        """The start block's row: the run's page, or its offline folder and how to upload it."""
        if self.mode == "offline":
            return "tracking", f"W&B offline ({self.why}), upload with: wandb sync {_shown(self.run.dir)}"
        if self.mode == "disabled":
            return "tracking", "W&B disabled (WANDB_MODE=disabled)"
        return "tracking", f"W&B {self.run.url or self.run.project}"

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "global_step": step})

    def summary(self, values: dict[str, Any]) -> None:
        """The run's summary.json numbers (status included) as the W&B run summary."""
        self.run.summary.update({k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))})

    def videos(self, paths: list[Path], step: int) -> None:
        """Evaluation mp4s as ``eval/video`` at the checkpoint's step."""
        import wandb

        if paths:
            self.run.log({"eval/video": [wandb.Video(str(p), format="mp4") for p in paths], "global_step": step})

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def _shown(path: str | Path) -> str:
    return shown(Path(path).parent)  # wandb's run.dir is <offline-run>/files

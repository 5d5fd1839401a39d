"""The three places where ``lerobot-stream train`` meets LeRobot's unchanged training script.

- ``make_train_eval_datasets`` (of ``lerobot.scripts.lerobot_train``): the dataset is built here,
  from lerobot-train's settings and the ``--stream.*`` / ``--mix.*`` options (on ``--resume=true``
  the checkpoint's options, overridden by the command line's).
- ``accelerate.Accelerator``: its ``prepare`` hands the script's DataLoader of our dataset to
  :meth:`TrainingHooks.streaming_loader`, which returns a :class:`StreamingDataLoader` with the same
  settings, resumed from the checkpoint. accelerate would otherwise re-wrap it and split batches
  across processes; the dataset already reads this process's share (rank and world size from accelerate).
- ``save_checkpoint``: after LeRobot's own checkpoint, the loader's state and options are written
  beside it (:mod:`lerobot_stream_loader.train.checkpoint`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, default_collate

from ..base import StreamingBase
from ..loader import StreamingDataLoader
from . import lerobot_api
from .build import build_dataset, describe
from .checkpoint import load_loader, save_loader, saved_world_size, state_for_rank
from .options import LoaderOptions

log = logging.getLogger(__name__)

TRAINING_STATE_DIR = "training_state"  # LeRobot's folder of a checkpoint's training state


class TrainingHooks:
    """What the hooks share in one training process: the options, the dataset, its loader."""

    def __init__(self, options: LoaderOptions) -> None:
        self.options = options
        self.dataset: StreamingBase[Any] | None = None
        self.loader: StreamingDataLoader | None = None
        self._resume: dict[str, Any] | None = None

    def make_train_eval_datasets(self, cfg: Any) -> tuple[StreamingBase[Any], None]:
        """Stands in for LeRobot's function of that name: our dataset, and no held-out split."""
        lerobot_api.check_config(cfg)
        if cfg.resume and cfg.checkpoint_path is not None:
            saved = load_loader(Path(cfg.checkpoint_path) / TRAINING_STATE_DIR)
            if saved is None:
                log.warning("%s holds no loader state: the data stream starts from the beginning",
                            cfg.checkpoint_path)
            else:
                self.options = self.options.merged_over(saved.options)
                self._resume = saved.loader_state
        rank, world = lerobot_api.process_place()
        dataset = build_dataset(lerobot_api.dataset_request(cfg), self.options,
                                delta_timestamps=lerobot_api.delta_timestamps(cfg), rank=rank, world_size=world)
        if cfg.dataset.use_imagenet_stats:
            lerobot_api.use_imagenet_stats(dataset.meta)
        log.info("Streaming %s", describe(dataset))
        self.dataset = dataset
        return dataset, None

    def streaming_loader(self, loader: DataLoader[Any]) -> StreamingDataLoader:
        """A StreamingDataLoader with ``loader``'s settings (resumed when the run resumes)."""
        kwargs: dict[str, Any] = dict(batch_size=loader.batch_size, num_workers=loader.num_workers,
                                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                                      persistent_workers=loader.persistent_workers)
        if loader.num_workers > 0:
            kwargs.update(prefetch_factor=loader.prefetch_factor,
                          multiprocessing_context=loader.multiprocessing_context)
        if loader.collate_fn is not default_collate:  # LeRobot's own (language columns): kept
            kwargs["collate_fn"] = loader.collate_fn
        streaming = StreamingDataLoader(loader.dataset, **kwargs)
        if self._resume is not None:
            state, self._resume = self._resume, None
            rank, world = lerobot_api.process_place()
            saved = saved_world_size(state)
            if saved == world:
                state = state_for_rank(state, rank)
            streaming.load_state_dict(state)
            log.info("Data stream resumed where the checkpoint left it%s", "" if saved == world else
                     f" (saved by {saved} processes, now {world}: the rest of the epoch is spread over them)")
        self.loader = streaming
        return streaming

    def saving(self, save_checkpoint: Callable[..., Any]) -> Callable[..., Any]:
        """LeRobot's ``save_checkpoint``, then the loader's part beside it."""

        @functools.wraps(save_checkpoint)
        def save(*args: Any, **kwargs: Any) -> Any:
            result = save_checkpoint(*args, **kwargs)
            folder = Path(kwargs["checkpoint_dir"] if "checkpoint_dir" in kwargs else args[0])
            if self.loader is not None:
                save_loader(folder / TRAINING_STATE_DIR, self.options, self.loader.state_dict())
            return result

        return save


def streaming_accelerator(base: type, hooks: TrainingHooks) -> type:
    """``base`` (accelerate's ``Accelerator``) whose prepare gives our dataset's DataLoader to ``hooks``."""

    class StreamingAccelerator(base):
        """accelerate's Accelerator; a DataLoader of a streaming dataset becomes a StreamingDataLoader
        that reads this process's share, unsplit and not re-wrapped."""

        def prepare_data_loader(self, data_loader: Any, device_placement: Any = None,
                                slice_fn_for_dispatch: Any = None) -> Any:
            if isinstance(getattr(data_loader, "dataset", None), StreamingBase):
                prepared = hooks.streaming_loader(data_loader)
                self._dataloaders.append(prepared)
                return prepared
            return super().prepare_data_loader(data_loader, device_placement=device_placement,
                                               slice_fn_for_dispatch=slice_fn_for_dispatch)

    return StreamingAccelerator


@contextmanager
def installed(hooks: TrainingHooks) -> Iterator[None]:
    """The hooks in place in LeRobot's training script and accelerate, for the ``with`` block."""
    import accelerate
    import lerobot.scripts.lerobot_train as script

    patches = [(script, "make_train_eval_datasets", hooks.make_train_eval_datasets),
               (script, "save_checkpoint", hooks.saving(script.save_checkpoint)),
               (accelerate, "Accelerator", streaming_accelerator(accelerate.Accelerator, hooks))]
    with ExitStack() as stack:
        for module, name, value in patches:
            stack.callback(setattr, module, name, getattr(module, name))
            setattr(module, name, value)
        yield

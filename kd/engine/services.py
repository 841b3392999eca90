"""The data and evaluation functions a run uses, bundled so tests (and future back-ends) can substitute them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from kd.config import RunConfig, TrainConfig
from kd.engine.batches import BatchSource, patch_batches
from kd.engine.distributed import SINGLE, DistContext


def default_batches(config: RunConfig, train: TrainConfig, *, seed: int, dist: DistContext = SINGLE,
                    pin_memory: bool = False) -> BatchSource:
    """This process's share of the training batches (`train.batch_size` is the global batch)."""
    dist.shard(train.batch_size)
    return patch_batches(
        config.data.train, config.scale, train.lr_patch, train.batch_size, train.steps,
        seed=seed, augment=config.data.augment, data_root=config.data.root, workers=config.data.workers,
        rank=dist.rank, world_size=dist.world_size, pin_memory=pin_memory, degradation=config.data.degradation,
    )


def default_evaluate(model: nn.Module, datasets: list[str], scale: int, **kwargs: Any) -> Any:
    from kd.evaluate import evaluate

    return evaluate(model, datasets, [scale], **kwargs)


@dataclass(frozen=True)
class Services:
    # (config, recipe, seed=, dist=, pin_memory=) -> this process's batches of (lr, hr) training patches
    make_batches: Callable[..., BatchSource] = default_batches
    # (model, datasets, scale, data_root=, with_lpips=, progress=, model_name=) -> kd.evaluate.EvalResult
    evaluate: Callable[..., Any] = default_evaluate

    @property
    def reads_datasets(self) -> bool:
        """The default data and evaluation functions, which read the configured datasets from disk."""
        return self.make_batches is default_batches and self.evaluate is default_evaluate

    def validator(self, config: RunConfig, device: str, model_name: str) -> Callable[[nn.Module], float] | None:
        """Mean PSNR-Y on `eval.val_dataset` (no LPIPS, no progress bar), or None when validation is off."""
        if not config.eval.val_dataset:
            return None

        def validate(model: nn.Module) -> float:
            result = self.evaluate(
                model, [config.eval.val_dataset], config.scale, data_root=config.data.root, with_lpips=False,
                progress=False, model_name=model_name, device=device, degradation=config.data.degradation,
            )
            return float(result.per_dataset["psnr_y"].mean())

        return validate


class LazyBatches:
    """Builds its batch source on first use (the held-out stream exists only for methods that ask for it)."""

    def __init__(self, build: Callable[[], BatchSource], batch_size: int) -> None:
        self._build = build
        self._source: BatchSource | None = None
        self.batch_size = batch_size

    def _get(self) -> BatchSource:
        if self._source is None:
            self._source = self._build()
        return self._source

    def iterate(self, start_step: int, end_step: int):
        return self._get().iterate(start_step, end_step)

    def batch(self, step: int):
        return self._get().batch(step)

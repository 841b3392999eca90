"""The training loop: one student (trained), an optional frozen teacher, one distillation method.

Everything that determines the future of a run is in its checkpoint: student, method modules, optimizer, EMA,
RNG state, best-so-far and the step (which is also the loader position, see `kd.engine.batches`). So a run killed
at any moment and restarted from `checkpoints/last.pt` finishes bitwise identical to an uninterrupted one on CPU.

Under torchrun (`kd.engine.distributed`) every rank runs this loop on its shard of each global batch; gradients
and logged loss terms are averaged over ranks, and only rank 0 logs, validates and writes checkpoints.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from kd.config import TrainConfig
from kd.engine.accel import AccelPlan, as_float32
from kd.engine.batches import BatchSource
from kd.engine.checkpoint import atomic_save, load_checkpoint
from kd.engine.distributed import SINGLE, DistContext
from kd.engine.ema import ModelEma
from kd.engine.events import EventWriter
from kd.engine.schedule import lr_at, make_optimizer, set_lr
from kd.errors import KdError
from kd.fileio import atomic_write_text, read_json_lines
from kd.methods.base import Distiller, StepContext, StepInputs
from kd.methods.health import HEALTHY, gradient_ratios, inert_as_published, out_of_range
from kd.models import capture, sr_inputs

CHECKPOINT_FORMAT = "kdbench-train-v1"
HEALTH_EVERY_LOGS = 10  # method health is measured at step 0 and every log_every * 10 steps


class TrainingDiverged(KdError):
    """A loss term or the weights became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1  # the run failed (not a usage mistake)


class TrainingInterrupted(Exception):
    """Ctrl-C: the run was checkpointed at `step` and can be resumed by re-running the same command."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step


def keep_previous(path: Path, previous: Path) -> None:
    """Make `previous` a copy of `path` (a hard link when the file system has them) without ever removing `path`."""
    tmp = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        import shutil

        shutil.copyfile(path, tmp)
    os.replace(tmp, previous)


class Progress(Protocol):
    def start(self, total: int, completed: int) -> None: ...

    def update(self, step: int, values: dict[str, float]) -> None: ...

    def note(self, text: str) -> None: ...

    def stop(self) -> None: ...


class NullProgress:
    def start(self, total: int, completed: int) -> None:
        pass

    def update(self, step: int, values: dict[str, float]) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class TrainOutcome:
    steps: int
    resumed_from: int
    train_seconds: float
    best_step: int | None
    best_psnr: float | None


class MetricsLog:
    """`metrics.jsonl`: one JSON record per line; on resume, records after the checkpoint are dropped. With
    `tensorboard`, the same numbers also go to TensorBoard event files in `<run>/tensorboard/`."""

    def __init__(self, path: Path, tensorboard: bool = False) -> None:
        self.path = path
        self.tensorboard = tensorboard
        self._events: EventWriter | None = None

    def open(self, step: int) -> None:
        """Continue the log at `step` (the checkpoint's): later records are dropped."""
        self.truncate_after(step)
        if self.tensorboard:
            self._events = EventWriter(self.path.parent / "tensorboard", step)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def truncate_after(self, step: int) -> None:
        """Keep the records up to `step`; a line that is no JSON object (cut short by a kill, damaged) goes too."""
        if not self.path.exists():
            return
        kept = [record for record in read_json_lines(self.path) if _step_of(record) <= step]
        atomic_write_text(self.path, "".join(f"{json.dumps(record)}\n" for record in kept))

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a step may be logged before fit() made the run folder
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._events is not None:
            self._events.write(record)

    def records(self) -> list[dict[str, Any]]:
        return read_json_lines(self.path)


def _step_of(record: dict[str, Any]) -> float:
    """A record's step; a record without a readable one sorts after every checkpoint (so it is dropped)."""
    try:
        return float(record.get("step", 0))
    except (TypeError, ValueError):
        return math.inf


@contextmanager
def _sigint_as_flag() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C asks the loop to checkpoint and stop at the next step boundary; a second one aborts."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    def __init__(
        self,
        train: TrainConfig,
        *,
        student: nn.Module,
        teacher: nn.Module | None,
        method: Distiller,
        weights: dict[str, float],
        batches: BatchSource,
        run_dir: str | Path,
        seed: int,
        validate: Callable[[nn.Module], float] | None = None,
        holdout: BatchSource | None = None,
        progress: Progress | None = None,
        config_hash: str = "",
        device: str | torch.device = "cpu",
        dist: DistContext = SINGLE,
        accel: AccelPlan | None = None,
        tensorboard: bool = False,
        reconstruction: str = "l1",
        resume_from: Path | None = None,
    ) -> None:
        """`resume_from`: the last checkpoint of the run this one extends (a finished run of the same configuration
        with fewer steps), trained on from while this run has no checkpoint of its own."""
        self.train = train
        self.reconstruction = reconstruction  # `method.rec`: the reconstruction loss every method's `rec` term uses
        self.resume_from = resume_from
        self.student = student
        self.teacher = teacher
        self.method = method
        self.weights = dict(weights)
        self.batches = batches
        self.holdout = holdout
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.seed = seed
        self.dist = dist
        self.accel = accel or AccelPlan(device_type=torch.device(device).type)
        self.validate = validate if dist.is_main else None
        self.validation_planned = validate is not None  # on every rank: checkpoint steps must agree
        self.progress = (progress or NullProgress()) if dist.is_main else NullProgress()
        self.config_hash = config_hash
        self.device = torch.device(device)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", tensorboard=tensorboard)

        if teacher is not None:
            teacher.eval().requires_grad_(False)  # frozen: never trained, never in train mode
        student.train()
        groups = [{"params": [p for p in student.parameters() if p.requires_grad], "lr": train.lr}]
        self.optimizer = make_optimizer(train, [*groups, *method.param_groups(train.lr)])
        self.trained_params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.forward_student = self._data_parallel(student)
        in_student = {id(p) for p in student.parameters()}
        # DDP averages the student's gradients; the method's own trained modules (adapters) are averaged by hand.
        self.method_params = [p for p in self.trained_params if id(p) not in in_student]
        self.ema = ModelEma(student, train.ema_decay) if train.ema_decay > 0 else None
        self.step = 0
        self.train_seconds = 0.0
        self.best_psnr: float | None = None
        self.best_step: int | None = None
        self.saved_step: int | None = None

    def _data_parallel(self, student: nn.Module) -> nn.Module:
        """The student under DistributedDataParallel when several processes train (bucketed all-reduce of its
        gradients, overlapping the backward pass); the module itself otherwise. Checkpoints, validation, EMA and
        taps always use the unwrapped module, so state-dict keys stay plain."""
        if not self.dist.enabled:
            return student
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are identical on every rank (deterministic constants, never updated by SR networks' forward), so
        # no per-forward sync. torch 2.13 renamed the flag; the lent GPU machines run torch 2.11 (gpu_check).
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            return DistributedDataParallel(student, device_ids=device_ids, forward_sync_buffers=False)
        return DistributedDataParallel(student, device_ids=device_ids, broadcast_buffers=False)

    # ------------------------------------------------------------------------------------------ one step

    def eval_model(self) -> nn.Module:
        """The weights that are validated, evaluated and exported: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.student

    def _holdout_batch(self) -> tuple[Tensor, Tensor]:
        if self.holdout is None:
            raise RuntimeError(f"method '{self.method.name}' asked for a held-out batch but none was configured")
        return self.holdout.batch(self.step)

    def loss_terms(self, lr: Tensor, hr: Tensor) -> dict[str, Tensor]:
        """The method's unweighted loss terms on one batch (student forward with taps, frozen teacher forward)."""
        accel = self.accel
        lr, hr = accel.batch(lr), accel.batch(hr)
        with accel.autocast(), capture(self.student, self.method.student_taps) as student_feats:
            student_out = self.forward_student(*sr_inputs(self.student, lr, hr))
        if student_out.shape[-2:] != hr.shape[-2:]:
            raise KdError(f"the network makes {tuple(student_out.shape[-2:])} images from LR patches of "
                          f"{tuple(lr.shape[-2:])}, but the HR patches are {tuple(hr.shape[-2:])}: the training pairs "
                          "are not at the network's scale (a dataset of another scale?).")
        teacher_out, teacher_feats = None, {}
        if self.teacher is not None and self.method.needs_teacher:
            teacher_lr = self.method.teacher_input(lr, hr)
            with torch.no_grad(), capture(self.teacher, self.method.teacher_taps, detach=True) as teacher_feats:
                inputs = sr_inputs(self.teacher, teacher_lr, hr)
                if accel.teacher_dtype != torch.float32:  # a half-precision teacher runs without autocast
                    teacher_out = self.teacher(*map(accel.teacher_input, inputs))
                else:
                    with accel.autocast():
                        teacher_out = self.teacher(*inputs)
            teacher_out, teacher_feats = as_float32(teacher_out), as_float32(dict(teacher_feats))
        with accel.autocast():
            terms = self.method.losses(
                StepInputs(lr, hr, student_out, teacher_out, dict(student_feats), dict(teacher_feats),
                           average=self.dist.average_, rec=self.reconstruction)
            )
        terms = {name: value.float() for name, value in terms.items()}
        unknown = [name for name in terms if name not in self.weights]
        if unknown:
            raise RuntimeError(f"method '{self.method.name}' returned undeclared loss terms {unknown}")
        return terms

    def health(self, lr: Tensor, hr: Tensor) -> dict[str, float]:
        """Gradient-norm ratio of each weighted KD term to the reconstruction term on this batch (no step taken)."""
        return gradient_ratios(self.loss_terms(lr, hr), self.weights, list(self.student.parameters()))

    def _health_due(self, index: int) -> bool:
        return index % (self.train.log_every * HEALTH_EVERY_LOGS) == 0

    def _record_health(self, index: int, ratios: dict[str, float]) -> None:
        if not ratios or not self.dist.is_main:
            return
        self.log.write({"step": index + 1, "health_step": index, "health": ratios})
        low, high = HEALTHY
        published = inert_as_published(self.method, self.weights)
        if index == 0:
            for name in sorted(published & ratios.keys()):
                self.progress.note(
                    f"note: term '{name}' keeps its published weight {self.weights[name]:g}, which leaves it nearly "
                    f"inert ({ratios[name]:.3g}x the reconstruction at step 0; ratios below {low:g}x are expected); "
                    f"method.weights.{name} raises it")
        for name, ratio in out_of_range(ratios).items():
            if name in published and ratio < low:
                continue
            self.progress.note(
                f"warning: step {index}: term '{name}' pulls on the student {ratio:.3g}x as hard as the "
                f"reconstruction (healthy: {low:g}-{high:g}x); adjust method.weights.{name}"
            )

    def train_step(self, lr: Tensor, hr: Tensor) -> dict[str, float]:
        """One optimizer step on (lr, hr); returns the unweighted loss terms, the total and the learning rate."""
        index = self.step
        lr_value = lr_at(self.train, index)
        set_lr(self.optimizer, lr_value, self.train.lr)

        terms = self.loss_terms(lr, hr)
        total = torch.stack([self.weights[n] * v for n, v in terms.items() if self.weights[n] != 0]).sum()
        if self._health_due(index):
            # On every rank, with gradients averaged like the step's (collectives); rank 0 records.
            self._record_health(index, gradient_ratios(terms, self.weights, list(self.student.parameters()),
                                                       self.dist.average_))

        logged = torch.stack([*(v.detach() for v in terms.values()), total.detach()])
        self.dist.average_([logged])  # every rank sees the same values, so a NaN stops all of them together
        values = dict(zip([*terms, "loss"], logged.tolist()))
        for name, value in values.items():
            if not math.isfinite(value):
                raise self._diverged(f"training stopped at step {index + 1}: loss term '{name}' is {value}",
                                     poisoned_step=index)

        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.dist.average_gradients([p for p in self.method_params if p.grad is not None])
        if self.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trained_params, self.train.grad_clip)
        context = StepContext(index, self.student, self.teacher, self.optimizer, lr_value, self._holdout_batch,
                              self.weights, average=self.dist.average_)
        values.update(self.method.before_optimizer_step(context))
        self.optimizer.step()
        self.method.after_optimizer_step(context)
        if self.ema is not None:
            self.ema.update(self.student)
        self.step = index + 1
        values["lr"] = lr_value
        return values

    # ------------------------------------------------------------------------------------------ state

    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def state_dict(self) -> dict[str, Any]:
        """The full training state; under DDP a collective call (it gathers every rank's RNG state)."""
        rng = self._rng_state()
        per_rank = self.dist.gather_objects(rng) if self.dist.enabled else None
        return {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.config_hash,
            "step": self.step,
            "samples_seen": self.step * self.batches.batch_size,
            "student": self.student.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.train.schedule, "step": self.step, "lr": lr_at(self.train, self.step)},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {**rng, "per_rank": per_rank},
            "best": {"psnr": self.best_psnr, "step": self.best_step},
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, Any], *, extended: bool = False) -> None:
        """`extended`: the state of the run this one extends, whose configuration differs in its step count."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise KdError(f"{self.checkpoint_dir / 'last.pt'} is not a kdbench training checkpoint.")
        if self.config_hash and not extended and state.get("config_hash") not in ("", self.config_hash):
            raise KdError(
                f"{self.checkpoint_dir / 'last.pt'} belongs to another configuration; remove {self.run_dir} to restart."
            )
        self.student.load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        rng = state["rng"]
        per_rank = rng.get("per_rank")
        if per_rank and len(per_rank) == self.dist.world_size:
            rng = per_rank[self.dist.rank]  # resumed with as many processes as were saved: each its own stream
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        torch.set_rng_state(rng["torch"])
        self.best_psnr = state["best"]["psnr"]
        self.best_step = state["best"]["step"]
        self.train_seconds = float(state["train_seconds"])
        self.step = int(state["step"])
        self.saved_step = self.step

    def _weights_finite(self) -> bool:
        tensors = [p.detach() for p in self.trained_params]
        if self.ema is not None:
            tensors += [t.detach() for t in self.ema.module.state_dict().values() if t.is_floating_point()]
        # One max per tensor (a NaN propagates, a sum could overflow), one sync at the end: cheap next to a step.
        peaks = [t.abs().amax().float() for t in tensors if t.numel()]
        return bool(torch.stack(peaks).isfinite().all()) if peaks else True

    def _diverged(self, what: str, poisoned_step: int | None) -> TrainingDiverged:
        """The divergence error; `poisoned_step`: a checkpoint written at that step holds the weights that produced
        the non-finite values, so the one before it becomes `last.pt` again."""
        last, previous = self.checkpoint_dir / "last.pt", self.checkpoint_dir / "previous.pt"
        if poisoned_step is not None and self.saved_step == poisoned_step:
            self.saved_step = None
            if self.dist.is_main and previous.is_file():
                self.saved_step = int(load_checkpoint(previous)["step"])
                os.replace(previous, last)
            elif self.dist.is_main:
                last.unlink(missing_ok=True)
        kept = (f"the last good checkpoint (step {self.saved_step}, finite weights and loss) is kept in {last}"
                if self.saved_step is not None else "no good checkpoint had been written yet")
        return TrainingDiverged(
            f"{what}; {kept}. Lower train.lr (now {self.train.lr:g}, e.g. --set train.lr={self.train.lr / 10:g}), "
            "set train.grad_clip, or lower the term's weight (method.weights.<term>); a changed configuration "
            "starts a new run."
        )

    def save_last(self) -> None:
        """Write `last.pt` from finite weights only. The checkpoint it replaces is kept as `previous.pt`: should the
        next step's loss be non-finite, the new weights caused it and `previous.pt` becomes `last.pt` again."""
        if not self._weights_finite():
            raise self._diverged(f"training stopped at step {self.step}: the weights are no longer finite",
                                 poisoned_step=None)
        state = self.state_dict()
        last = self.checkpoint_dir / "last.pt"
        if self.dist.is_main:
            if last.is_file():
                keep_previous(last, self.checkpoint_dir / "previous.pt")
            else:  # a fresh start: a previous.pt left from an older training is not this one's
                (self.checkpoint_dir / "previous.pt").unlink(missing_ok=True)
            atomic_save(state, last)
        self.saved_step = self.step

    def _save_best(self, psnr: float) -> None:
        state = {"step": self.step, "psnr": psnr, "student": self.eval_model().state_dict()}
        atomic_save(state, self.checkpoint_dir / "best.pt")

    def resume(self) -> int:
        """Load `checkpoints/last.pt` when present, else the extended run's (`resume_from`); returns the step
        training continues from."""
        path = self.checkpoint_dir / "last.pt"
        self.dist.barrier()  # rank 0 may still be writing the run directory
        if path.exists():
            self.load_state_dict(load_checkpoint(path))
        elif self.resume_from is not None:
            self.load_state_dict(load_checkpoint(self.resume_from), extended=True)
            self.saved_step = None  # that checkpoint is the other run's: this run has none of its own yet
        return self.step

    # ------------------------------------------------------------------------------------------ loop

    def _run_validation(self) -> float:
        model = self.eval_model()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                psnr = float(self.validate(model))
        finally:
            model.train(was_training)
        self.log.write({"step": self.step, "val_psnr_y": psnr})
        if self.best_psnr is None or psnr > self.best_psnr:
            self.best_psnr, self.best_step = psnr, self.step
            self._save_best(psnr)
        return psnr

    def fit(self) -> TrainOutcome:
        train = self.train
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        start = self.resume()
        if start == 0:
            torch.manual_seed(self.seed + self.dist.rank)  # seeds CUDA generators too
            self.dist.broadcast_module(self.student)
            self.dist.broadcast_module(self.method)
        if self.dist.is_main:
            self.log.open(start)
        self.progress.start(train.steps, start)
        try:
            with _sigint_as_flag() as local_interrupt:
                def interrupted() -> bool:
                    return self.dist.any(local_interrupt(), self.device)

                if interrupted():
                    raise TrainingInterrupted(self.step)
                data_start = time.perf_counter()
                for lr, hr in self.batches.iterate(start, train.steps):
                    lr, hr = lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True)
                    data_time = time.perf_counter() - data_start
                    began = time.perf_counter()
                    values = self.train_step(lr, hr)
                    step_time = time.perf_counter() - began
                    self.train_seconds += step_time + data_time
                    step = self.step
                    if self.dist.is_main and (step % train.log_every == 0 or step == train.steps):
                        terms = {k: v for k, v in values.items() if k not in ("loss", "lr")}
                        self.log.write(
                            {"step": step, "lr": values["lr"], "loss": values["loss"], "terms": terms,
                             "step_time": round(step_time, 6), "data_time": round(data_time, 6)}
                        )
                    self.progress.update(step, values)
                    validation_due = self.validation_planned and (
                        (train.val_every and step % train.val_every == 0) or step == train.steps
                    )
                    if validation_due and self.validate is not None:
                        psnr = self._run_validation()
                        self.progress.note(f"step {step}: validation PSNR-Y {psnr:.3f} dB")
                    stop = interrupted()
                    if validation_due or step % train.ckpt_every == 0 or step == train.steps or stop:
                        self.save_last()
                    if stop and step < train.steps:
                        raise TrainingInterrupted(step)
                    data_start = time.perf_counter()
        finally:
            self.progress.stop()
            self.log.close()
        return TrainOutcome(train.steps, start, self.train_seconds, self.best_step, self.best_psnr)

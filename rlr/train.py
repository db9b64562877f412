"""Training the reconstructors on cached backbone features of normal images.

One optimizer steps every level after each batch; checkpoints are selected on a validation
split of the normal training images (never on test data), can be resumed, and training stops
early when the validation loss stops improving.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from rlr.config import TrainConfig
from rlr.errors import CheckpointError, ConfigError
from rlr.model import LevelOutput, RLRModel

CHECKPOINT_VERSION = 1


def reconstruction_loss(outputs: list[LevelOutput]) -> Tensor:
    """Sum over levels of MSE + mean(1 - cos) between reconstruction and clean features."""
    total = outputs[0].target.new_zeros((), dtype=torch.float32)
    for o in outputs:
        t, r = o.target.float(), o.recon.float()
        total = total + F.mse_loss(r, t) + (1 - F.cosine_similarity(r, t, dim=1)).mean()
    return total


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    out_of_time: bool
    seconds: float
    images_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"} | {
            "final_train_loss": self.history[-1]["train_loss"] if self.history else None,
        }


class _Clock:
    """Training time spent, carried across resumes, for `TrainConfig.max_seconds`."""

    def __init__(self, spent: float = 0.0) -> None:
        self.reset(spent)

    def reset(self, spent: float) -> None:
        self.start = time.perf_counter() - spent

    def spent(self) -> float:
        return time.perf_counter() - self.start


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int, clock: _Clock) -> Callable[[int], float]:
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch, 1)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(total - warmup, 1)
        if cfg.max_seconds:
            # With a time budget the cosine follows whichever runs out first: steps or time.
            progress = max(progress, clock.spent() / cfg.max_seconds)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def _batches(feats: list[Tensor], batch_size: int, order: Tensor, device: torch.device):
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield [f[idx].to(device, non_blocking=True) for f in feats]


@torch.no_grad()
def validation_loss(model: RLRModel, feats: list[Tensor], batch_size: int,
                    device: torch.device, amp: bool = False) -> float:
    """Mean reconstruction loss on clean (un-jittered) features."""
    rec = model.reconstructor
    was_training = rec.training
    rec.eval()
    n, total = feats[0].shape[0], 0.0
    order = torch.arange(n)
    for batch in _batches(feats, batch_size, order, device):
        with _autocast(device, amp):
            total += reconstruction_loss(rec(batch)).item() * batch[0].shape[0]
    rec.train(was_training)
    return total / max(n, 1)


def _autocast(device: torch.device, amp: bool):
    enabled = amp and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def fit(
    model: RLRModel,
    train_feats: list[Tensor],
    val_feats: list[Tensor] | None,
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model.reconstructor` in place; on return it holds the best validation weights.

    train_feats / val_feats: backbone features per level, [(N, C, H, W)], standardisation
    statistics already set on the model. Without validation images the last epoch is kept.
    """
    device = torch.device(device)
    n = train_feats[0].shape[0]
    if n == 0:
        raise ConfigError("no training images left after the validation split; add images")
    torch.manual_seed(cfg.seed)
    rec = model.reconstructor.to(device)
    params = [p for p in rec.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    clock = _Clock()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch, clock))
    gen = torch.Generator().manual_seed(cfg.seed)

    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "seconds": 0.0}
    best_weights = copy.deepcopy(rec.state_dict())
    if resume and checkpoint is not None and Path(checkpoint).exists():
        best_weights = _load_checkpoint(Path(checkpoint), rec, opt, sched, gen, state, cfg)
    clock.reset(state.get("seconds", 0.0))

    start_epoch = state["epoch"]
    t0, seen, stopped_early, out_of_time = time.perf_counter(), 0, False, False
    bar = tqdm(range(start_epoch, cfg.epochs), desc="train", unit="epoch",
               disable=not progress, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        rec.train()
        order = torch.randperm(n, generator=gen)
        run_loss = 0.0
        for batch in _batches(train_feats, cfg.batch_size, order, device):
            with _autocast(device, cfg.amp):
                loss = reconstruction_loss(
                    rec(batch, jitter=cfg.jitter_scale, jitter_prob=cfg.jitter_prob)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * batch[0].shape[0]
            seen += batch[0].shape[0]
        record = {"epoch": epoch + 1, "train_loss": run_loss / n, "lr": sched.get_last_lr()[0]}
        if val_feats is not None and val_feats[0].shape[0] > 0:
            record["val_loss"] = validation_loss(model, val_feats, cfg.batch_size, device, cfg.amp)
        metric = record.get("val_loss", record["train_loss"])
        if metric < state["best_val"] * (1 - 1e-4) or val_feats is None:
            state.update(best_val=metric, best_epoch=epoch + 1, bad_epochs=0)
            best_weights = copy.deepcopy(rec.state_dict())
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        state["seconds"] = clock.spent()
        record["seconds"] = round(state["seconds"], 2)
        state["history"].append(record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                         if k not in ("epoch", "seconds")})
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), rec, best_weights, opt, sched, gen, state, cfg)
        if on_epoch is not None:
            on_epoch(record)
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            stopped_early = True
            break
        per_epoch = state["seconds"] / state["epoch"]
        if cfg.max_seconds and state["seconds"] + 0.5 * per_epoch > cfg.max_seconds:
            out_of_time = True  # the next epoch would end (mostly) past the budget
            break
    bar.close()

    seconds = time.perf_counter() - t0
    rec.load_state_dict(best_weights)
    rec.eval()
    return TrainResult(
        best_epoch=state["best_epoch"],
        best_val_loss=float(state["best_val"]),
        epochs_run=state["epoch"],
        stopped_early=stopped_early,
        out_of_time=out_of_time,
        seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else 0.0,
        history=state["history"],
    )


def _save_checkpoint(path, rec, best, opt, sched, gen, state, cfg) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": rec.state_dict(),
        "best": best,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": json.dumps({k: v for k, v in state.items()}),
        "train_config": json.dumps(cfg.__dict__),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a broken checkpoint


def _load_checkpoint(path, rec, opt, sched, gen, state, cfg) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has version {payload.get('version')}, expected "
                f"{CHECKPOINT_VERSION}; start without --resume"
            )
        saved = json.loads(payload["train_config"])
        for key in ("batch_size", "optimizer", "seed"):
            if saved.get(key) != getattr(cfg, key):
                raise CheckpointError(
                    f"checkpoint {path} was trained with {key}={saved.get(key)!r}, now "
                    f"{getattr(cfg, key)!r}; resume with the same settings or start afresh"
                )
        rec.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        sched.load_state_dict(payload["scheduler"])
        gen.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        state.update(json.loads(payload["state"]))
        return payload["best"]
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"cannot resume from {path}: {exc}; delete it or start without --resume"
        ) from exc

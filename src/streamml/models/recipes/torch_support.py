"""Optional PyTorch support for recipes: import check, modules and a seeded training loop.

Nothing here imports torch at module import time; :func:`require_torch` raises a :class:`ModelError` that
tells the user to install the extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamml.errors import ModelError


def torch_available() -> bool:
    """Whether PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_torch(recipe: str) -> Any:
    """The ``torch`` module, or :class:`ModelError` naming the extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            f"recipe '{recipe}' needs PyTorch, which is not installed", hint="pip install 'streamml[torch]'"
        ) from exc
    return torch


#: what a sequence model reads of each feature: its level, its change since the window's first reading, or both
SEQUENCE_INPUTS = ("level", "change", "both")


def window_changes(values: np.ndarray) -> np.ndarray:
    """Each reading of ``[N, steps, features]`` windows minus the window's first reading (NumPy)."""
    values = np.asarray(values, dtype=np.float32)
    return values - values[:, :1, :]


def sequence_module(
    features: int,
    hidden: int,
    cell: str,
    layers: int,
    level: tuple[np.ndarray, np.ndarray] | None = None,
    change: tuple[np.ndarray, np.ndarray] | None = None,
    inputs: str = "level",
) -> Any:
    """``[N, steps, features]`` raw readings ``-> P(positive) [N, 1]``: an LSTM/GRU whose last state feeds a sigmoid.

    ``inputs`` says what the cell reads per feature: the reading (``level``), the reading minus the window's
    first one (``change``: per-key baselines drop out, so the model learns from how readings move instead of
    memorising each key's normal levels), or both side by side. Each is standardised inside the module with
    ``level`` / ``change`` = (mean, scale) per feature from the training windows, so the exported graph takes
    raw readings: sensors on scales as far apart as an engine vibration of ~2,000 and an accelerometer of
    ~0.1 would otherwise leave the cell saturated by the large ones and blind to the small ones.
    """
    torch = require_torch("sequence")
    nn = torch.nn
    rnn_type: Any = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
    if rnn_type is None:
        raise ModelError(f"unknown recurrent cell '{cell}'", hint="use lstm or gru")
    if inputs not in SEQUENCE_INPUTS:
        raise ModelError(f"unknown sequence inputs '{inputs}'", hint=f"use {', '.join(SEQUENCE_INPUTS)}")

    def buffers(stats: tuple[np.ndarray, np.ndarray] | None) -> tuple[Any, Any]:
        mean = np.zeros(features) if stats is None else np.asarray(stats[0], np.float64).reshape(features)
        scale = np.ones(features) if stats is None else np.asarray(stats[1], np.float64).reshape(features)
        if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(mean).all()):
            raise ModelError("feature means must be finite and scales positive and finite")
        return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy((1.0 / scale).astype(np.float32))

    use_level, use_change = inputs in ("level", "both"), inputs in ("change", "both")

    class SequenceClassifier(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            for name, stats in (("level", level), ("change", change)):
                mean, inverse_scale = buffers(stats)
                self.register_buffer(f"{name}_mean", mean)
                self.register_buffer(f"{name}_inverse_scale", inverse_scale)
            width = features * (int(use_level) + int(use_change))
            self.rnn = rnn_type(width, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x: Any) -> Any:
            parts = []
            if use_level:
                parts.append((x - self.level_mean) * self.level_inverse_scale)
            if use_change:
                parts.append((x - x[:, :1, :] - self.change_mean) * self.change_inverse_scale)
            out, _ = self.rnn(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
            return torch.sigmoid(self.head(out[:, -1, :]))

    return SequenceClassifier()


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of ``values`` (last axis = features); a constant feature gets scale 1."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
    if not len(flat):
        raise ModelError("no readings to standardise the features on")
    mean = flat.mean(axis=0)
    scale = flat.std(axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12 * np.maximum(np.abs(mean), 1.0)), scale, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def image_module(height: int, width: int, classes: int, scale: float) -> Any:
    """``[N, 1, H, W]`` raw pixels -> class probabilities ``[N, classes]``; pixel scaling is inside.

    Conv blocks (3x3 conv, ReLU, 2x2 max pool) with 16, 32, 64 ... channels, two for pictures up to 15 pixels
    a side and one more per doubling, so the last block sees most of a picture of any size."""
    torch = require_torch("image")
    nn = torch.nn
    blocks = 2 + max(0, int(np.log2(max(min(height, width), 1) / 8)))
    layers: list[Any] = []
    channels, h, w = 1, height, width
    for block in range(blocks):
        out = 16 * 2**block
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, h, w = out, h // 2, w // 2

    class SmallCnn(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.tensor(1.0 / scale))
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(channels * h * w, classes)

        def forward(self, x: Any) -> Any:
            hidden = self.features(x * self.scale)
            return torch.softmax(self.head(hidden.flatten(1)), dim=1)

    return SmallCnn()


@contextlib.contextmanager
def intra_op_threads(torch: Any, threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, restoring the previous setting afterwards.

    The recipes' models are small: one thread trains them about as fast as several on an idle machine, and
    many times faster on a busy one, where spinning worker threads fight for the cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit(
    module: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    loss: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    patience: int = 5,
    threads: int = 1,
    on_epoch: Callable[[Any], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Adam with mini-batches and early stopping on validation loss (keeps the best weights).

    ``loss`` is ``"bce"`` (module returns probabilities ``[N, 1]``, targets 0/1) or ``"nll"`` (module returns
    class probabilities, targets are class indices). ``threads`` is torch's intra-op thread count meanwhile.
    ``on_epoch`` is called with the module after each epoch, in eval mode without gradients (to measure it).
    """
    torch = require_torch("training")
    with intra_op_threads(torch, threads):
        return _fit(torch, module, x_train, y_train, x_val, y_val, loss, epochs, batch_size, learning_rate, seed,
                    patience, on_epoch)  # fmt: skip


def _fit(
    torch: Any,
    module: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    loss: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    patience: int,
    on_epoch: Callable[[Any], None] | None,
) -> tuple[list[float], list[float]]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
    xt, xv = torch.from_numpy(np.asarray(x_train, np.float32)), torch.from_numpy(np.asarray(x_val, np.float32))
    if loss == "bce":
        yt = torch.from_numpy(np.asarray(y_train, np.float32).reshape(-1, 1))
        yv = torch.from_numpy(np.asarray(y_val, np.float32).reshape(-1, 1))
        positives = float(yt.sum())
        weight = (len(yt) - positives) / max(positives, 1.0)

        def criterion(probs: Any, target: Any) -> Any:
            probs = probs.clamp(1e-7, 1 - 1e-7)
            return -(weight * target * probs.log() + (1 - target) * (1 - probs).log()).mean()

    else:
        yt = torch.from_numpy(np.asarray(y_train, np.int64))
        yv = torch.from_numpy(np.asarray(y_val, np.int64))

        def criterion(probs: Any, target: Any) -> Any:
            return torch.nn.functional.nll_loss(probs.clamp_min(1e-7).log(), target)

    train_losses: list[float] = []
    val_losses: list[float] = []
    best, best_state, stale = float("inf"), None, 0
    for _ in range(epochs):
        module.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), batch_size):
            index = order[start : start + batch_size]
            optimiser.zero_grad()
            value = criterion(module(xt[index]), yt[index])
            value.backward()
            optimiser.step()
            total += float(value.detach()) * len(index)
        train_losses.append(total / max(len(xt), 1))
        module.eval()
        with torch.inference_mode():
            val_losses.append(float(criterion(module(xv), yv)))
            if on_epoch is not None:
                on_epoch(module)
        if val_losses[-1] < best - 1e-6:
            best, stale = val_losses[-1], 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return train_losses, val_losses

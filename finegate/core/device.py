"""Device and training budget: the full budget on a GPU, a bounded one on CPU.

Training, evaluation and promotion all ask here which device to use and how long a sequence
may be, so the CPU/GPU choice is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from finegate.core.config import TrainConfig


@dataclass(frozen=True)
class Budget:
    """The training budget actually used on this device."""

    device: str
    max_length: int
    batch_size: int
    learning_rate: float
    max_steps: int
    eval_every: int
    bf16: bool
    fused_adamw: bool
    compile: bool


def pick_device(requested: str) -> str:
    """``cuda`` when asked for or available (``auto``), else ``cpu``."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return requested


def budget_for(train: TrainConfig, device: str, bf16_supported: bool = True) -> Budget:
    """The full budget on GPU (bf16 when supported, fused AdamW, optional compile); on CPU the
    bounded one in plain fp32."""
    if device == "cpu":
        return Budget(device, train.cpu_max_length, train.cpu_batch_size,
                      train.cpu_learning_rate, train.cpu_max_steps, train.cpu_eval_every,
                      bf16=False, fused_adamw=False, compile=False)
    return Budget(device, train.max_length, train.batch_size, train.learning_rate,
                  train.max_steps, train.eval_every, bf16=bf16_supported, fused_adamw=True,
                  compile=train.compile)


def eval_max_length(train: TrainConfig, device: str) -> int:
    """The sequence length a model trained with ``train`` is scored at on ``device``: the
    length it was trained at (``cpu_max_length`` on CPU, ``max_length`` else)."""
    return budget_for(train, device).max_length

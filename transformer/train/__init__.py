"""Training: tasks over the generated corpora, the (DDP-capable) loop, and the shipped-checkpoint recipes."""

from ..snapshots import load_snapshots
from .loop import TrainConfig, lr_at, snapshot_steps, train
from .tasks import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "TrainConfig", "get_task", "load_snapshots", "lr_at", "snapshot_steps", "train"]

"""Training: tasks over the generated corpora, the (DDP-capable) loop, and the shipped-checkpoint recipes."""

from transformer.checkpoints.snapshots import load_snapshots
from transformer.data.tasks import TASKS, Task, get_task
from transformer.train.loop import TrainConfig, lr_at, snapshot_steps, train

__all__ = ["TASKS", "Task", "TrainConfig", "get_task", "load_snapshots", "lr_at", "snapshot_steps", "train"]

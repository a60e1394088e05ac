"""``MonitorMaster``: sends the engine's training events to every enabled monitor.

Events are ``(name, value, step)`` tuples with DeepSpeed's names, e.g.
``("Train/Samples/train_loss", 2.31, 4096)``, ``"Train/Samples/lr"``, ``"Train/Samples/loss_scale"``
and the ``wall_clock_breakdown`` timings ``"Train/Samples/elapsed_time_ms_forward"`` ... where the
step is the number of samples seen so far. Only rank 0 writes.
"""

from __future__ import annotations

from deepspeed.monitor.base import Monitor, _rank, _scalar

#: The event names the engine writes (DeepSpeed's).
TRAIN_LOSS_EVENT = "Train/Samples/train_loss"
LR_EVENT = "Train/Samples/lr"
LOSS_SCALE_EVENT = "Train/Samples/loss_scale"
FORWARD_TIME_EVENT = "Train/Samples/elapsed_time_ms_forward"
BACKWARD_TIME_EVENT = "Train/Samples/elapsed_time_ms_backward"
BACKWARD_INNER_TIME_EVENT = "Train/Samples/elapsed_time_ms_backward_inner"
BACKWARD_ALLREDUCE_TIME_EVENT = "Train/Samples/elapsed_time_ms_backward_allreduce"
STEP_TIME_EVENT = "Train/Samples/elapsed_time_ms_step"


def _as_monitor_config(monitor_config):
    if isinstance(monitor_config, dict):
        from deepspeed.monitor.config import get_monitor_config

        return get_monitor_config(monitor_config)
    return monitor_config


class MonitorMaster(Monitor):
    """Fan-out to the TensorBoard, CSV, WandB and Comet monitors the config enables.

    ``monitor_config`` is ``DeepSpeedConfig.monitor_config`` (or the ds_config dict, or any
    object with ``tensorboard``/``wandb``/``csv_monitor``/``comet`` sections). An enabled monitor
    whose package is missing raises ``RuntimeError`` naming the package to install.
    """

    def __init__(self, monitor_config):
        monitor_config = _as_monitor_config(monitor_config)
        super().__init__(monitor_config)
        self.tb_monitor = None
        self.wandb_monitor = None
        self.csv_monitor = None
        self.comet_monitor = None
        self.enabled = any(getattr(getattr(monitor_config, key, None), "enabled", False)
                           for key in ("tensorboard", "wandb", "csv_monitor", "comet"))
        if not self.enabled or _rank() != 0:
            return
        # Note: imported here so a job without monitors never imports tensorboard or wandb.
        if monitor_config.tensorboard.enabled:
            from deepspeed.monitor.tensorboard import TensorBoardMonitor

            self.tb_monitor = TensorBoardMonitor(monitor_config.tensorboard)
        if monitor_config.wandb.enabled:
            from deepspeed.monitor.wandb import WandbMonitor

            self.wandb_monitor = WandbMonitor(monitor_config.wandb)
        if monitor_config.csv_monitor.enabled:
            from deepspeed.monitor.csv_monitor import CSVMonitor

            self.csv_monitor = CSVMonitor(monitor_config.csv_monitor)
        comet = getattr(monitor_config, "comet", None)
        if comet is not None and comet.enabled:
            from deepspeed.monitor.comet import CometMonitor

            self.comet_monitor = CometMonitor(comet)

    def _monitors(self):
        return [m for m in (self.tb_monitor, self.wandb_monitor, self.csv_monitor, self.comet_monitor) if m]

    def write_events(self, event_list) -> None:
        if _rank() != 0:
            return
        events = [(name, _scalar(value), int(step)) for name, value, step in event_list]
        for monitor in self._monitors():
            monitor.write_events(events)

    def close(self) -> None:
        for monitor in self._monitors():
            monitor.close()

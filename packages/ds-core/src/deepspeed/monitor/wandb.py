"""``wandb``: events logged to Weights & Biases (``wandb.log({name: value}, step=step)``); the
``wandb`` package must be installed."""

from __future__ import annotations

from deepspeed.monitor.base import Monitor, _import


class WandbMonitor(Monitor):
    def __init__(self, wandb_config):
        super().__init__(wandb_config)
        self._wandb = _import("wandb", "wandb")
        self.group = wandb_config.group
        self.team = wandb_config.team
        self.project = wandb_config.project
        self._wandb.init(project=self.project, group=self.group, entity=self.team)

    def log(self, data, step=None, commit=None, sync=None) -> None:
        self._wandb.log(data, step=step, commit=commit)

    def write_events(self, event_list) -> None:
        for name, value, step in event_list:
            self.log({name: value}, step=step)

    def close(self) -> None:
        self._wandb.finish()

"""``comet``: events logged to a Comet experiment every ``samples_log_interval`` samples; the
``comet_ml`` package must be installed."""

from __future__ import annotations

from deepspeed.monitor.base import Monitor, _import


class CometMonitor(Monitor):
    def __init__(self, comet_config):
        super().__init__(comet_config)
        comet_ml = _import("comet_ml", "comet")
        self.samples_log_interval = comet_config.samples_log_interval
        if self.samples_log_interval <= 0:
            raise ValueError(f"comet.samples_log_interval={self.samples_log_interval} must be positive")
        config = None
        if comet_config.experiment_name is not None:
            config = comet_ml.ExperimentConfig(name=comet_config.experiment_name)
        self.experiment = comet_ml.start(
            api_key=comet_config.api_key,
            project=comet_config.project,
            workspace=comet_config.workspace,
            experiment_key=comet_config.experiment_key,
            mode=comet_config.mode,
            online=comet_config.online,
            experiment_config=config,
        )
        self._last_logged: dict[str, int] = {}

    def write_events(self, event_list) -> None:
        for name, value, step in event_list:
            # Note: the step is a sample count; log when it crossed the next interval boundary.
            bucket = step // self.samples_log_interval
            if self._last_logged.get(name) == bucket:
                continue
            self._last_logged[name] = bucket
            self.experiment.log_metric(name, value, step=step)

    def close(self) -> None:
        self.experiment.end()

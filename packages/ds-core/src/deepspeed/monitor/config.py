"""Monitor sections of ds_config: ``tensorboard``, ``wandb``, ``csv_monitor``, ``comet``."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from deepspeed.config.model import DeepSpeedConfigModel


class TensorBoardConfig(DeepSpeedConfigModel):
    enabled: bool = False
    output_path: str = ""
    job_name: str = "DeepSpeedJobName"


class WandbConfig(DeepSpeedConfigModel):
    enabled: bool = False
    group: Optional[str] = None
    team: Optional[str] = None
    project: str = "deepspeed"


class CSVConfig(DeepSpeedConfigModel):
    enabled: bool = False
    output_path: str = ""
    job_name: str = "DeepSpeedJobName"


class CometConfig(DeepSpeedConfigModel):
    enabled: bool = False
    samples_log_interval: int = 100
    project: Optional[str] = None
    workspace: Optional[str] = None
    api_key: Optional[str] = None
    experiment_name: Optional[str] = None
    experiment_key: Optional[str] = None
    online: Optional[bool] = None
    mode: Optional[str] = None


class DeepSpeedMonitorConfig(DeepSpeedConfigModel):
    """All monitors together; ``.enabled`` is true when any of them is."""

    tensorboard: TensorBoardConfig = Field(default_factory=TensorBoardConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    csv_monitor: CSVConfig = Field(default_factory=CSVConfig)
    comet: CometConfig = Field(default_factory=CometConfig)

    @property
    def enabled(self) -> bool:
        return any(m.enabled for m in (self.tensorboard, self.wandb, self.csv_monitor, self.comet))


MONITOR_KEYS = ("tensorboard", "wandb", "csv_monitor", "comet")


def get_monitor_config(param_dict: dict) -> DeepSpeedMonitorConfig:
    return DeepSpeedMonitorConfig(**{k: param_dict.get(k, {}) for k in MONITOR_KEYS})

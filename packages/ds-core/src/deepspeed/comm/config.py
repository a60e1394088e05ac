"""``comms_logger`` section of ds_config: which collectives the comms logger records."""

from __future__ import annotations

from deepspeed.config.model import DeepSpeedConfigModel


class CommsLoggerConfig(DeepSpeedConfigModel):
    """``comms_logger {enabled, verbose, prof_all, debug, prof_ops}``."""

    enabled: bool = False
    verbose: bool = False
    prof_all: bool = True
    debug: bool = False
    prof_ops: list[str] = []


class DeepSpeedCommsConfig:
    """DeepSpeed's holder: ``.comms_logger_enabled`` and ``.comms_logger`` (a CommsLoggerConfig)."""

    def __init__(self, ds_config: dict):
        section = ds_config.get("comms_logger")
        self.comms_logger_enabled = section is not None
        self.comms_logger = CommsLoggerConfig(**(section or {}))

    def __repr__(self) -> str:
        return f"DeepSpeedCommsConfig(comms_logger_enabled={self.comms_logger_enabled}, comms_logger={self.comms_logger!r})"

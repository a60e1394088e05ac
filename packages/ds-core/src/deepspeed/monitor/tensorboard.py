"""``tensorboard``: scalars written with ``torch.utils.tensorboard.SummaryWriter`` to
``<output_path>/<job_name>/`` (the ``tensorboard`` package must be installed)."""

from __future__ import annotations

import os

from deepspeed.monitor.base import Monitor


class TensorBoardMonitor(Monitor):
    def __init__(self, tensorboard_config):
        super().__init__(tensorboard_config)
        self.output_path = tensorboard_config.output_path
        self.job_name = tensorboard_config.job_name
        self.summary_writer = None
        self.get_summary_writer()

    def get_summary_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError(
                "tensorboard.enabled=true in the ds_config needs the tensorboard package, which is not "
                f"installed ({exc}). Fix: pip install tensorboard, or set tensorboard.enabled to false"
            ) from None
        log_dir = os.path.join(self.output_path or "", self.job_name)
        os.makedirs(log_dir, exist_ok=True)
        self.summary_writer = SummaryWriter(log_dir=log_dir)
        return self.summary_writer

    def write_events(self, event_list, flush: bool = True) -> None:
        for name, value, step in event_list:
            self.summary_writer.add_scalar(name, value, step)
        if flush:
            self.summary_writer.flush()

    def flush(self) -> None:
        self.summary_writer.flush()

    def close(self) -> None:
        self.summary_writer.close()

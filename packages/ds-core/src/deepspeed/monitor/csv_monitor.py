"""``csv_monitor``: one CSV file per event under ``<output_path>/<job_name>/``.

``Train/Samples/train_loss`` goes to ``Train_Samples_train_loss.csv`` with the header
``step,train_loss`` and one ``step,value`` row per event, appended as training runs.
"""

from __future__ import annotations

import csv
import os

from deepspeed.monitor.base import Monitor


class CSVMonitor(Monitor):
    def __init__(self, csv_config):
        super().__init__(csv_config)
        self.output_path = csv_config.output_path
        self.job_name = csv_config.job_name
        # Note: as in DeepSpeed, an empty output_path puts the job folder in the working directory.
        self.log_dir = os.path.join(self.output_path or "", self.job_name)
        os.makedirs(self.log_dir, exist_ok=True)
        self.filenames: list[str] = []

    @staticmethod
    def _file_stem(name: str) -> str:
        return name.replace("/", "_").replace(" ", "_")

    def write_events(self, event_list) -> None:
        for name, value, step in event_list:
            stem = self._file_stem(name)
            header = name.rsplit("/", 1)[-1]
            path = os.path.join(self.log_dir, stem + ".csv")
            new = stem not in self.filenames
            # Note: a file left by an earlier run of the same job is continued, not rewritten,
            # and gets no second header.
            if new:
                self.filenames.append(stem)
                new = not os.path.exists(path) or os.path.getsize(path) == 0
            with open(path, "a", newline="") as fd:
                writer = csv.writer(fd)
                if new:
                    writer.writerow(["step", header])
                writer.writerow([step, value])


#: DeepSpeed's class name.
csvMonitor = CSVMonitor

"""Settings of the records (the recorder and `rlrctl records`): where the database is, how the
recorder batches and which consumer group it reads in. Read from `RLR_*` environment variables
like every other part's settings."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator

from daemon.logs import LogSettings
from daemon.settings import PartSettings
from daemon.supervisor import SupervisorSettings
from daemon.wire.settings import WireSettings


class RecordsSettings(PartSettings):
    """Where verdicts and pictures are recorded, how the recorder batches, and how long they
    are kept."""

    records_url: str | None = Field(None, description="records database: postgresql://user@host"
                                    "/db, sqlite:///path; unset: SQLite under RLR_RECORDS_DIR")
    records_dir: Path = Field(Path("rlr-records"), description="data folder of the records "
                              "(the SQLite file records.db when RLR_RECORDS_URL is unset)")
    records_batch: int = Field(1000, ge=1, le=5000, description="entries the recorder writes "
                               "in one transaction at most")
    records_block_ms: int = Field(500, ge=1, description="how long the recorder waits for new "
                                  "entries before it writes a partial batch")
    records_group: str = Field("rlr-recorder", description="the recorder's consumer group")
    records_consumer: str = Field("", description="the recorder's consumer name (default "
                                  "recorder-<host>: a restart finishes its own pending entries)")
    records_claim_idle_ms: int = Field(60_000, ge=1000, description="entries another recorder "
                                       "left pending this long are taken over")
    records_migrate: bool = Field(False, description="the recorder upgrades an old schema at "
                                  "start instead of refusing to start")
    records_shift_hours: int = Field(8, ge=1, le=24, description="length of a shift, for "
                                     "`records yield --by shift`")
    records_shift_start_h: int = Field(6, ge=0, le=23, description="hour the first shift of "
                                       "the day starts")
    records_utc_offset_min: int = Field(0, ge=-14 * 60, le=14 * 60, description="the plant's "
                                        "offset from UTC in minutes: where days and shifts begin")

    records_keep_pass: float = Field(0.01, ge=0, le=1, description="share of passing frames "
                                     "whose picture is kept (rejects' always are)")
    records_days: float = Field(90, ge=0, description="days frame results, part verdicts and "
                                "their pictures are kept (0: no age limit)")
    records_max_gb: float = Field(100, ge=0, description="most GB the pictures and the rows "
                                  "may take; the oldest go first (0: no size limit)")
    records_rollup_days: float = Field(1825, ge=0, description="days the hourly yield "
                                       "rollups are kept (0: forever)")
    records_prune_every_s: int = Field(3600, ge=10, description="how often the recorder "
                                       "applies the retention")

    recorder_metrics_port: int = Field(0, ge=0, le=65535, description="the recorder's "
                                       "Prometheus port (0: no metrics endpoint)")
    recorder_metrics_host: str = Field("0.0.0.0", description="address the recorder's metrics "
                                       "server binds")

    @field_validator("records_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def recorder_consumer(self) -> str:
        return self.records_consumer or f"recorder-{socket.gethostname()}"

    @property
    def database_url(self) -> str:
        """RLR_RECORDS_URL, or the SQLite file under RLR_RECORDS_DIR."""
        if self.records_url:
            return self.records_url
        return f"sqlite:///{(self.records_dir / 'records.db').resolve()}"

    @property
    def pictures_dir(self) -> Path:
        """Where the frames and masks are kept (RLR_RECORDS_DIR/pictures)."""
        return self.records_dir / "pictures"


class RecorderSettings(WireSettings, SupervisorSettings, LogSettings, RecordsSettings):
    """The recorder process (`rlrctl recorder`) and `rlrctl records`."""

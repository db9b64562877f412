from __future__ import annotations

import pytest
import sqlalchemy as sa

from daemon.errors import RecordsError, RecordsUnavailable
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store, engine_url, shown
from daemon.records.tables import frame_results, part_verdicts

from .reference import frame_rows, part_rows


def count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_batch_written_twice_is_stored_once(store):
    frames, parts = frame_rows(300), part_rows(40)
    assert store.write(frames, parts) == (300, 40)
    assert store.write(frames, parts) == (0, 0)
    # a batch that overlaps the last one: only the new rows count
    assert store.insert_frames(frame_rows(350)) == 50
    assert (count(store, frame_results), count(store, part_verdicts)) == (350, 40)


def test_the_first_write_of_a_key_wins(store):
    row = frame_rows(1)[0]
    store.insert_frames([row])
    store.insert_frames([{**row, "score": 99.0, "entry_id": "9-0"}])
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(frame_results.c.score)).scalar_one() == row["score"]


def test_two_cameras_may_send_the_same_frame_id(store):
    row = frame_rows(1)[0]
    assert store.insert_frames([row, {**row, "camera": "other"}]) == 2


def test_unset_url_is_a_sqlite_file_under_the_records_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("RLR_RECORDS_URL", raising=False)
    monkeypatch.setenv("RLR_RECORDS_DIR", str(tmp_path / "data"))
    store = Store.open()
    assert store.engine.dialect.name == "sqlite"
    assert (tmp_path / "data" / "records.db").exists()
    assert RecordsSettings(records_url="  ").records_url is None


@pytest.mark.parametrize("url, says", [
    ("not a url", "is not a database URL"),
    ("mysql://u@h/db", "'mysql' is not supported"),
    ("sqlite://", "names no file"),
])
def test_a_malformed_url_is_one_line_naming_the_setting(url, says):
    with pytest.raises(RecordsError, match=says) as info:
        Store.open(url=url)
    assert "RLR_RECORDS_URL" in str(info.value) and "\n" not in str(info.value)


def test_an_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(RecordsUnavailable) as info:
        Store.open(url="postgresql://rlr:s3cret@127.0.0.1:1/records")
    message = str(info.value)
    assert "cannot be reached" in message and "RLR_RECORDS_URL" in message
    assert "s3cret" not in message and "\n" not in message


def test_postgres_urls_go_through_psycopg_3():
    assert engine_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert engine_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert shown(engine_url("postgresql://u:pw@h/db")) == "postgresql://u:***@h/db"


def test_writing_to_a_database_without_the_tables_says_to_migrate(tmp_path):
    store = Store.open(url=f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(RecordsError, match="rlrctl records migrate"):
        store.insert_frames(frame_rows(1))

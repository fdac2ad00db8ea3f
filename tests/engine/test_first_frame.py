"""The UI's first reads in a second process (engine.client.first_frame): a real helper
process on a real SQLite home answers what the client reads here, says whether the database
is damaged or held by a daemon, and whatever goes wrong with it, the UI checks and reads
storage itself."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from engine.client import Client
from engine.client.first_frame import FIRST_PAGE, FirstReads
from engine.errors import StorageError

PIPELINE = textwrap.dedent(
    """
    from engine import Pipeline, StaticPartitions, asset, task

    regions = StaticPartitions(["eu", "us"])


    @asset
    def raw():
        return [1, 2, 3]


    @asset
    def cleaned(raw):
        return [x * 2 for x in raw]


    @asset(partitions=regions)
    def sales(context):
        return context.partition


    with Pipeline("chores"):

        @task
        def extract():
            return 1

        @task
        def load():
            return 2

        extract >> load
    """
)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "shop.py").write_text(PIPELINE)
    client = Client(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    client.materialize(["raw", "cleaned"])
    client.materialize(["sales"], partition="eu")
    client.run_pipeline("chores")
    (tmp_path / "pipelines" / "shop.py").write_text(PIPELINE + "\n# raw's code changed\n")
    return client


def test_the_helper_reads_what_the_client_reads_here(client: Client) -> None:
    first = FirstReads(client, FIRST_PAGE)
    assert first.verdict() is False  # no daemon holds the home
    frame = first.result()
    assert frame is not None
    assert first._proc is None  # the helper is gone
    assert frame.runs == client.runs(FIRST_PAGE) and len(frame.runs) == 3
    assert frame.assets == client.node_statuses()
    assert frame.assets is not None and frame.assets["sales"].partition == "eu"
    assert frame.tasks == {"chores": client.node_statuses(pipeline="chores")}
    assert max(r.created_at for r in frame.runs) < frame.since < time.time()


def test_a_damaged_database_is_the_helpers_verdict_in_the_same_words(client: Client) -> None:
    db = client.paths.home / "dagtop.db"
    client.close()
    data = bytearray(db.read_bytes())
    data[4096 : 4096 + 512] = b"\xff" * 512  # a page of the history overwritten
    db.write_bytes(bytes(data))
    with pytest.raises(StorageError) as here:
        Client(home=client.paths.home, pipelines=client.paths.pipelines).verify_db()
    first = FirstReads(client, FIRST_PAGE)
    with pytest.raises(StorageError) as helper:
        first.verdict()
    assert helper.value.msg == here.value.msg and str(db) in helper.value.msg
    assert first._proc is None


def test_a_daemon_holding_the_home_is_the_verdict(client: Client) -> None:
    other = Client(home=client.paths.home, pipelines=client.paths.pipelines)
    engine = other.start_engine(kind="daemon")  # this process, so another to the helper
    try:
        first = FirstReads(client, FIRST_PAGE)
        assert first.verdict() is True
        first.close()
    finally:
        engine.stop(grace=1.0)


def test_without_the_helpers_answer_the_client_checks_and_reads_itself(client: Client) -> None:
    first = FirstReads(client, FIRST_PAGE)
    first.close()  # as if it died before answering
    assert first.verdict() is False  # checked here
    assert first.result() is None  # the home reads storage itself


def test_a_missing_pipelines_folder_still_reads_the_runs(client: Client, tmp_path: Path) -> None:
    gone = Client(home=client.paths.home, pipelines=tmp_path / "nowhere")
    first = FirstReads(gone, FIRST_PAGE)
    assert first.verdict() is False
    frame = first.result()
    assert frame is not None and frame.assets is None and frame.tasks == {}
    assert len(frame.runs) == 3

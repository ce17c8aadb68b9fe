"""A tracking store that stops answering: retries, one warning, a local spool, and `workbench sync` uploads it.

The store that is down is an http:// URI where nothing listens (connection refused, at once);
the spool is then uploaded into a real SQLite store that holds the run. The end-to-end case
with a real `mlflow server` killed mid-run is in tests/test_tracking_server.py.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from support import sqlite_store

from workbench.cli import main
from workbench.tracking.offline import JOURNAL, PROGRESS, ResilientClient, SpoolBusy, spooled_runs, upload


def dead_http_uri() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """(client of a SQLite store with one RUNNING run, its URI, the run id); MLflow's HTTP retries off."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("WORKBENCH_OFFLINE_DIR", str(tmp_path / "offline"))
    uri = sqlite_store(tmp_path)
    client = MlflowClient(uri)
    experiment = client.create_experiment("outage", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    return client, uri, run_id


def outage_client(run_id: str, messages: list[str]) -> ResilientClient:
    return ResilientClient(MlflowClient(dead_http_uri()), run_id, delays=(0.0, 0.0), announce=messages.append)


def metrics(key: str, steps: range) -> list[Metric]:
    return [Metric(key, float(s) / 10, 1_700_000_000_000 + s, s) for s in steps]


def test_writes_during_an_outage_are_spooled_in_order_announced_once_and_uploaded_whole(store, tmp_path):
    client, uri, run_id = store
    messages: list[str] = []
    resilient = outage_client(run_id, messages)
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "record.npz").write_bytes(b"not really npz")
    end = int(time.time() * 1000)
    resilient.log_batch(run_id, metrics=metrics("train/loss", range(0, 1500)), params=[Param("model.hidden", "[8]")])
    resilient.set_tag(run_id, "workbench.verdict", "healthy")
    resilient.log_artifacts(run_id, str(tmp_path / "stats"), "stats")
    resilient.log_text(run_id, "seed = 1\n", "spec.toml")
    resilient.log_dict(run_id, {"verdict": "healthy"}, "diagnosis.json")
    (tmp_path / "stats" / "record.npz").write_bytes(b"changed after logging")  # the spool kept its own copy
    resilient.set_terminated(run_id, "FINISHED", end_time=end)

    assert resilient.offline and len(messages) == 1
    assert "stopped answering" in messages[0] and "workbench sync" in messages[0] and run_id in messages[0]
    spool = resilient.spool.dir
    ops = [json.loads(line)["op"] for line in (spool / JOURNAL).read_text().splitlines()]
    assert ops == ["log_batch", "set_tag", "log_artifacts", "log_artifacts", "log_artifacts", "set_terminated"]
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing reached the store yet
    assert (spool / "files" / "2" / "record.npz").read_bytes() == b"not really npz"
    assert spooled_runs() == [spool]
    with pytest.raises(SpoolBusy):  # the run still holds its spool: no upload may read a growing journal
        upload(spool, uri)
    resilient.spool.release()  # as the run's finish does
    with pytest.raises(MlflowException):  # uploading to the store the spool names, still down
        upload(spool)
    assert spool.exists() and client.get_run(run_id).info.status == "RUNNING"

    report = upload(spool, uri)  # into the store that holds the run
    assert (report.operations, report.metric_values, report.status) == (6, 1500, "FINISHED")
    assert not spool.exists()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == end
    assert run.data.params == {"model.hidden": "[8]"} and run.data.tags["workbench.verdict"] == "healthy"
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1500))
    assert {a.path for a in client.list_artifacts(run_id)} == {"stats", "spec.toml", "diagnosis.json"}
    stats = client.download_artifacts(run_id, "stats/record.npz", str(tmp_path))
    assert open(stats, "rb").read() == b"not really npz"  # the copy taken when it was logged
    assert json.loads(open(client.download_artifacts(run_id, "diagnosis.json", str(tmp_path))).read()) == \
        {"verdict": "healthy"}


def test_an_upload_cut_short_goes_on_where_it_stopped(store):
    client, uri, run_id = store
    resilient = outage_client(run_id, [])
    for start in (0, 100, 200):
        resilient.log_batch(run_id, metrics=metrics("val/loss", range(start, start + 100)))
    resilient.set_terminated(run_id, "KILLED")
    resilient.spool.release()
    spool = resilient.spool.dir
    first_op = json.loads((spool / JOURNAL).read_text().splitlines()[0])
    MlflowClient(uri).log_batch(run_id, metrics=[Metric(*m) for m in first_op["metrics"]])  # replayed before a crash
    (spool / PROGRESS).write_text("1")
    with open(spool / JOURNAL, "a") as f:
        f.write('{"op": "set_tag", "key": "cut sh')  # a line the crash cut short
    report = upload(spool, uri)
    assert report.operations == 3 and report.status == "KILLED"
    steps = [m.step for m in client.get_metric_history(run_id, "val/loss")]
    assert sorted(steps) == list(range(300))  # each value once
    assert client.get_run(run_id).info.status == "KILLED"


def test_an_error_that_will_not_heal_is_raised_not_spooled(store):
    client, uri, run_id = store
    messages: list[str] = []
    resilient = ResilientClient(client, run_id, delays=(0.0,), announce=messages.append)
    resilient.log_batch(run_id, params=[Param("lr", "0.1")])
    with pytest.raises(MlflowException) as caught:  # a param cannot change value
        resilient.log_batch(run_id, params=[Param("lr", "0.2")])
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert not resilient.offline and messages == [] and not resilient.spool.dir.exists()


def test_sync_command_uploads_every_spooled_run_and_says_so(store, capsys):
    client, uri, run_id = store
    resilient = outage_client(run_id, [])
    resilient.log_batch(run_id, metrics=metrics("train/loss", range(10)))
    resilient.set_terminated(run_id, "FINISHED")
    assert main(["sync", "--tracking-uri", uri]) == 1  # the run has not released its spool yet
    assert "still being written" in capsys.readouterr().err
    resilient.spool.release()
    assert main(["sync", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"run {run_id}: uploaded 10 metric values in 2 operations" in out and "status FINISHED" in out
    assert client.get_run(run_id).info.status == "FINISHED"
    assert main(["sync"]) == 0
    assert "nothing to upload" in capsys.readouterr().out


def test_sync_reports_a_store_still_down_and_keeps_the_spool(store, capsys):
    client, uri, run_id = store
    resilient = outage_client(run_id, [])
    resilient.set_tag(run_id, "k", "v")
    resilient.spool.release()
    assert main(["sync"]) == 1  # the spool names the dead store
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run {run_id}: could not upload" in err[0] and "workbench sync" in err[0]
    assert resilient.spool.dir.exists()


def test_sync_names_an_unknown_run_and_a_missing_folder(store, tmp_path, capsys):
    client, uri, run_id = store
    outage_client(run_id, []).set_tag(run_id, "k", "v")
    assert main(["sync", "0123456789abcdef"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "0123456789abcdef" in err and run_id in err
    assert main(["sync", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_journal_line_cut_short_is_repaired_and_a_corrupt_one_is_named(store):
    client, uri, run_id = store
    resilient = outage_client(run_id, [])
    resilient.set_tag(run_id, "a", "1")
    resilient.spool.release()
    journal = resilient.spool.dir / JOURNAL
    with open(journal, "a") as f:
        f.write('{"op": "set_tag", "key": "b", "val')  # a crash while writing this line
    again = outage_client(run_id, [])  # the same run's writes go on (a resumed run)
    again.set_tag(run_id, "c", "3")
    again.spool.release()
    assert [json.loads(line)["key"] for line in journal.read_text().splitlines()] == ["a", "c"]
    with open(journal, "a") as f:
        f.write("not json\n")
        f.write(json.dumps({"op": "set_tag", "key": "d", "value": "4"}) + "\n")
    with pytest.raises(ValueError, match="line 3 is not a JSON operation"):
        upload(again.spool.dir, uri)
    assert client.get_run(run_id).data.tags["c"] == "3"  # the lines before it went up, once
    assert (again.spool.dir / PROGRESS).read_text() == "2"


def test_a_local_error_is_not_an_outage(store, tmp_path):
    client, uri, run_id = store
    messages: list[str] = []
    resilient = ResilientClient(client, run_id, delays=(0.0,), announce=messages.append)
    with pytest.raises(FileNotFoundError):
        resilient.log_artifact(run_id, str(tmp_path / "no such file.png"), "plots")
    assert not resilient.offline and messages == []


def test_resume_waits_for_the_offline_writes_to_be_uploaded(store, capsys):
    client, uri, run_id = store
    resilient = outage_client(run_id, [])
    resilient.set_terminated(run_id, "KILLED")
    resilient.spool.release()
    assert main(["run", "--resume", run_id, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"workbench sync {run_id}" in err


@pytest.mark.slow
def test_a_studys_report_is_kept_offline_when_the_server_is_gone_and_synced_later(store, tmp_path, capsys):
    from types import SimpleNamespace

    from workbench.studies.parent_run import finish_parent_run

    client, uri, run_id = store  # the parent run, as the study created it while the server answered
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.md").write_text("| config | mean |\n")
    report = SimpleNamespace(counts={"COMPLETE": 3, "PRUNED": 1, "FAIL": 0}, epochs_total=40, best=None,
                             metric="val/accuracy", comparison="a vs b: within noise", folder=folder)
    settings = SimpleNamespace(tracking_uri=dead_http_uri())
    finish_parent_run(settings, run_id, report, "FINISHED")  # the server is gone: nothing raised
    err = capsys.readouterr().err
    assert err.count("stopped answering") == 1 and "workbench sync" in err
    assert client.get_run(run_id).info.status == "RUNNING"

    assert main(["sync", "--tracking-uri", uri]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["trials/complete"] == 3 and run.data.metrics["epochs/total"] == 40
    assert run.data.tags["workbench.comparison"] == "a vs b: within noise"
    assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/report.md"]


def test_a_replayed_create_run_takes_the_run_it_made_already(tmp_path):
    """The agent can be killed between the store's insert of a run and writing its id down: the upload that
    follows replays `create_run` and must take that run, not make a second one (the first would stay RUNNING)."""
    from mlflow import MlflowClient

    from workbench.tracking.replay import CREATION_TAG, Replayer, create_run

    client = MlflowClient(sqlite_store(tmp_path))
    op = {"op": "create_run", "experiment": "replayed", "spec_name": "replayed", "run_name": None,
          "tags": {CREATION_TAG: "c0ffee"}, "params": {"seed": "0"}}
    made, experiment_id = create_run(client, op)
    replayer = Replayer(client, None, tmp_path)
    replayer.apply(op)
    replayer.apply({"op": "set_terminated", "status": "KILLED"})
    assert replayer.run_id == made
    runs = client.search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [made] and runs[0].info.status == "KILLED"
    other = Replayer(client, None, tmp_path)
    other.apply({**op, "tags": {CREATION_TAG: "another"}})  # another operation: another run
    assert other.run_id != made and len(client.search_runs([experiment_id])) == 2


class CountingClient:
    """A real MlflowClient that counts the log_batch calls made through it."""

    def __init__(self, uri: str) -> None:
        self.client, self.batches = MlflowClient(uri), 0

    def log_batch(self, *args, **kwargs):
        self.batches += 1
        return self.client.log_batch(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def test_consecutive_metric_blocks_are_uploaded_in_few_batches_up_to_a_corrupt_line(store, tmp_path, monkeypatch):
    """An agent's journal holds a metric block per hand-over: an upload (`workbench sync`, or the training
    process after its agent died) sends runs of them as one log_batch, and still saves progress exactly."""
    from workbench.tracking.offline import replay_journal

    client, uri, run_id = store
    keys = ["grad_norm/dense1", "grad_norm/dense2"]
    blocks = [{"op": "metric_block", "keys": keys, "steps": [5 * b, 5 * b + 1], "timestamp": 1_700_000_000_000,
               "values": [[float(b), 2.0 * b], [b + 0.5, 2.0 * b + 1]]} for b in range(40)]
    lines = [json.dumps(op) for op in [*blocks[:30], {"op": "set_tag", "key": "between", "value": "1"},
                                       *blocks[30:]]]
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / JOURNAL).write_text("\n".join([*lines, "not json", json.dumps(blocks[0])]) + "\n")
    counting = CountingClient(uri)
    with pytest.raises(ValueError, match="line 42 is not a JSON operation"):
        replay_journal(spool, counting, {"run_id": run_id, "tracking_uri": uri})
    assert counting.batches == 2  # 30 blocks, a tag, 10 blocks
    assert (spool / PROGRESS).read_text() == "41"
    for column, key in enumerate(keys):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == sorted((step, row[column]) for op in blocks for step, row in zip(op["steps"], op["values"]))
    assert client.get_run(run_id).data.tags["between"] == "1"
    report = replay_journal(spool, counting, {"run_id": run_id, "tracking_uri": uri}, start=31, stop=41)
    assert (report.operations, report.metric_values) == (10, 40)
    monkeypatch.setattr("workbench.tracking.replay.MERGED_METRICS", 8)  # a group ends once it holds 8 values
    counting.batches = 0
    replay_journal(spool, counting, {"run_id": run_id, "tracking_uri": uri}, start=0, stop=30)
    assert counting.batches == 15

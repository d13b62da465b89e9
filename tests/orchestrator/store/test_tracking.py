"""MLflow naming and per-call limits (chunked, never dropped)."""

from orchestrator.store.tracking import MAX_ENTRIES, MAX_METRICS, MAX_PARAMS, MAX_TAGS, log_batch_chunked, metric_name


def test_metric_names_are_readable_and_reversible():
    assert metric_name("mmlu_local", "acc,none") == "mmlu_local/acc"
    assert metric_name("gsm8k", "exact_match,strict-match") == "gsm8k/exact_match/strict-match"
    assert metric_name("humaneval_local", "pass@1,none") == "humaneval_local/pass_at_1"


class FakeClient:
    def __init__(self):
        self.calls = []

    def log_batch(self, run_id, metrics, params, tags):
        assert len(metrics) <= MAX_METRICS and len(params) <= MAX_PARAMS and len(tags) <= MAX_TAGS
        assert len(metrics) + len(params) + len(tags) <= MAX_ENTRIES
        self.calls.append((len(metrics), len(params), len(tags)))


def test_log_batch_chunks_within_limits_and_keeps_everything():
    client = FakeClient()
    metrics = [(f"t/m{i}", i, 0, 0) for i in range(2500)]
    params = [(f"p{i}", "x" * 7000) for i in range(250)]
    tags = [(f"tag{i}", "v") for i in range(130)]
    log_batch_chunked(client, "run", metrics, params, tags)
    assert sum(c[0] for c in client.calls) == 2500
    assert sum(c[1] for c in client.calls) == 250
    assert sum(c[2] for c in client.calls) == 130


def test_metric_names_reverse_to_lm_eval_keys():
    from orchestrator.store.tracking import lm_eval_key

    for task, key in (
        ("mmlu_local", "acc,none"),
        ("gsm8k", "exact_match,strict-match"),
        ("humaneval_local", "pass@1,none"),
        ("ppl_local", "word_perplexity,none"),
    ):
        assert lm_eval_key(metric_name(task, key)) == (task, key)


def test_a_new_local_store_is_seeded_from_one_built_per_mlflow_version(tmp_path, monkeypatch):
    """The first store on a machine runs MLflow's migrations (into the cache); later ones are
    copies that MLflow opens without migrating, work like any store, and keep an existing store."""
    import sqlite3

    import mlflow

    from orchestrator.store.tracking import client, seed_sqlite_store

    monkeypatch.setenv("QUANTGRID_CACHE", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "mlflow-store" / f"empty-mlflow-{mlflow.__version__}.db"
    first = client(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    assert template.exists()
    stamp = template.stat().st_mtime_ns
    c = client(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")
    assert template.stat().st_mtime_ns == stamp  # copied, not built again
    exp = c.create_experiment("quantgrid/x")
    run = c.create_run(exp)
    c.log_metric(run.info.run_id, "t/acc", 0.5)
    assert [m.value for m in c.get_metric_history(run.info.run_id, "t/acc")] == [0.5]
    assert first.get_experiment_by_name("quantgrid/x") is None  # two stores, not one file
    assert c.get_experiment("0").artifact_location == (tmp_path / "b" / "mlartifacts").resolve().as_uri()
    seed_sqlite_store(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")  # an existing store is left alone
    with sqlite3.connect(tmp_path / "b" / "mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 1
    assert not list((tmp_path / "b").glob("*.tmp"))

"""The throughput probe: the host's best GEMM rate, cached per host and per probe method."""

import json


def test_probe_reports_the_best_rep_and_a_cache_from_another_method_is_measured_again(tmp_path, monkeypatch):
    from orchestrator.planning import sizing
    from quantgrid.host import probe as probe_host
    from quantgrid.types import stable_hash
    from workers.probe import PROBE_METHOD

    monkeypatch.setenv("QUANTGRID_CACHE", str(tmp_path))
    h = probe_host()
    # What an earlier probe (mean over reps, measured under load) left in the cache.
    stale = (
        tmp_path / "probe" / f"{h.name.replace(':', '-')}-{stable_hash([h.cpu_model, h.native_isa, 'float32'], 8)}.json"
    )
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"dtype": "float32", "gflops": 0.5, "host": h.name}))
    got = sizing.probe("float32")
    assert got["method"] == PROBE_METHOD == "best-rep" and got["reps"] >= 3
    assert got["gflops"] > 0.5 and got["host"] == h.name
    assert sizing.probe("float32") == got  # cached under the method's key
    assert len(list((tmp_path / "probe").glob("*.json"))) == 2

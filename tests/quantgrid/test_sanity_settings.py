"""sweep.sanity (quantgrid/settings.py Sanity): the post-quantize gate's limits, refused in one
line when wrong, and carried from the composed sweep to the quantize stage's arguments."""

import pytest

from quantgrid.errors import ConfigError
from quantgrid.settings import Sanity


def test_defaults_and_switches():
    assert Sanity.of(None) == Sanity.of(True) == Sanity()
    assert Sanity().enabled and Sanity().max_ppl_ratio == 2.0 and Sanity().max_kl == 1.0
    assert Sanity.of(False) == Sanity(enabled=False)
    got = Sanity.of({"max_kl": 0.25, "documents": 8, "max_tokens": 128, "max_ppl_ratio": float("inf")})
    assert (got.max_kl, got.documents, got.max_tokens, got.max_ppl_ratio) == (0.25, 8, 128, float("inf"))
    assert Sanity.of({"enabled": False}).enabled is False


@pytest.mark.parametrize(
    "node,needle",
    [
        ({"max_kll": 1}, "sweep.sanity must be true, false or a map of enabled, max_ppl_ratio, max_kl"),
        ("yes", "sweep.sanity must be true, false or a map of"),
        ({"enabled": "no"}, "sweep.sanity.enabled must be true or false, got 'no'"),
        ({"max_ppl_ratio": 1.0}, "sweep.sanity.max_ppl_ratio must be a number > 1, got 1.0"),
        ({"max_ppl_ratio": True}, "sweep.sanity.max_ppl_ratio must be a number > 1"),
        ({"max_kl": 0}, "sweep.sanity.max_kl must be a number > 0, got 0"),
        ({"max_kl": float("nan")}, "sweep.sanity.max_kl must be a number > 0, got nan"),
        ({"max_kl": "1"}, "sweep.sanity.max_kl must be a number > 0, got '1'"),
        ({"documents": 0}, "sweep.sanity.documents must be an integer in [1, 8], got 0"),
        ({"documents": 9}, "sweep.sanity.documents must be an integer in [1, 8], got 9"),
        ({"documents": 2.0}, "sweep.sanity.documents must be an integer in [1, 8], got 2.0"),
        ({"max_tokens": 8}, "sweep.sanity.max_tokens must be an integer in [16, 1048576], got 8"),
    ],
)
def test_bad_settings_are_refused_in_one_line(node, needle):
    with pytest.raises(ConfigError) as e:
        Sanity.of(node)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_sweep_section_reaches_the_quantize_stage():
    from orchestrator.config import compose, load_sweep

    assert load_sweep(compose(["sweep=tiny"])).sanity == Sanity()
    assert load_sweep(compose(["sweep=tiny", "+sweep.sanity=false"])).sanity == Sanity(enabled=False)
    sweep = load_sweep(compose(["sweep=tiny", "+sweep.sanity={max_kl: 0.2, documents: 2}"]))
    assert sweep.sanity == Sanity(max_kl=0.2, documents=2)
    with pytest.raises(ConfigError, match="sweep.sanity.documents must be an integer"):
        load_sweep(compose(["sweep=tiny", "+sweep.sanity={documents: 99}"]))

    from orchestrator.execution.driver import Driver
    from orchestrator.planning.plan import expand
    from quantgrid.types import Artifact, StageKind

    plan = expand(sweep)
    drv = Driver.__new__(Driver)  # quantize_args reads only the plan and the built artifacts
    drv.plan = plan
    stage = next(s for s in plan.stages if s.kind is StageKind.QUANTIZE)
    drv.summary = type("S", (), {"artifacts": {stage.depends_on[0]: Artifact(path="base", content_hash="h")}})()
    job = type("J", (), {"stage": stage})()
    args = drv.quantize_args(job)
    assert args[-1] == Sanity(max_kl=0.2, documents=2)
    # the worker's signature takes them in this order (and the sleep worker's mirrors it)
    import inspect

    from tests.support.sleep_worker import SleepWorker
    from workers.actor import StageWorker

    for worker in (StageWorker, SleepWorker):
        # (Ray's tracing adds `_ray_trace_ctx` to an actor class it has wrapped in this process)
        params = [p for p in list(inspect.signature(worker.quantize).parameters)[1:] if not p.startswith("_ray")]
        assert params == ["base", "model", "fmt", "calibration_path", "calibration_dtype", "sanity"], worker

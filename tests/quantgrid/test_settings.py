"""Resources: one table of defaults, validated the same way wherever a section comes from."""

import pytest

from quantgrid.errors import ConfigError
from quantgrid.settings import OOM_FALLBACKS, Resources


def test_one_default_table_whatever_builds_the_sweep():
    from orchestrator.config import compose, load_sweep
    from orchestrator.planning.placement import NodeShape
    from orchestrator.planning.policy import PlacementPolicy

    composed = load_sweep(compose(["sweep=tiny"])).resources
    assert composed == Resources() == Resources.of(None) == Resources.of({"lease_s": None})
    # a Sweep built without conf/ (the benches) gets the same defaults: reuse_actors was once
    # true in conf/config.yaml and false in the scheduler
    assert PlacementPolicy([NodeShape(2, 0)], None).cfg == composed
    assert composed.reuse_actors is True and composed.oom_fallbacks == OOM_FALLBACKS and composed.lease_s == 120


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"lease": 5}, "resources.lease: unknown setting (known: cpus_per_actor"),
        ({"lease_s": 0}, "resources.lease_s must be > 0"),
        ({"max_retries": "two"}, "resources.max_retries must be int"),
        ({"reuse_actors": 1}, "resources.reuse_actors must be bool"),
        ({"oom_fallbacks": ["halve_batch"]}, "unknown step 'halve_batch'"),
        ({"data_parallel": "some"}, "must be auto, off or a replica count"),
        ({"runtime_env": {"score": {}}}, "resources.runtime_env.score: unknown stage"),
        ({"runtime_env": {"quantize": {"python": "/x"}}}, "['python'] is not a Ray runtime_env field"),
    ],
)
def test_bad_values_are_one_line(data, needle):
    with pytest.raises(ConfigError, match=None) as e:
        Resources.of(data)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_overrides_keep_the_rest_and_lists_become_tuples():
    r = Resources.of({"oom_fallbacks": ["halve_max_model_len"], "cpus_per_actor": 1})
    assert r.oom_fallbacks == ("halve_max_model_len",) and r.cpus_per_actor == 1 and r.stage_timeout_s == 3600
    assert Resources.of(r) is r

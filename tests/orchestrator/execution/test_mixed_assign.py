"""A mixed format's assignment at its quantize stage (orchestrator/execution/mixed.py), without
Ray: the sensitivity result as the run store holds it -> the integer program -> the modules each
candidate targets; a missing result or an unreachable GB budget fails in one line."""

import pytest

from orchestrator.config import compose, load_sweep
from orchestrator.execution.mixed import assign
from orchestrator.execution.stages import Unresolved
from orchestrator.planning.plan import expand
from orchestrator.store.results import RunStore
from quantgrid.types import SampleRecord, StageKind, TaskResult

# 4 layers x (qkv, down): the down_projs are the sensitive ones, layer 2's most
LAYERS, KL = 4, {"qkv_proj": 0.001, "down_proj": 0.01}


def _store_sensitivity(run_dir, cell):
    records = []
    for layer in range(LAYERS):
        for module, kl in KL.items():
            name = f"model.layers.{layer}.{'self_attn' if module == 'qkv_proj' else 'mlp'}.{module}"
            shards = [name.replace("qkv", p) for p in "qkv"] if module == "qkv_proj" else [name]
            records.append(
                SampleRecord(
                    doc_id=len(records),
                    target=name,
                    response="",
                    metrics={"kl": kl * (5 if layer == 2 else 1), "ppl_ratio": 1.0, "params": 1000.0},
                    extra={"layer": layer, "module": module, "modules": shards, "model_params": 16000},
                )
            )
    result = TaskResult(cell.key, cell.model.name, cell.format.name, cell.task.name, {}, records, len(records), 0.0, {})
    RunStore(run_dir).write_files(result)


@pytest.fixture
def planned():
    sweep = load_sweep(compose(["sweep=demo_mixed", "sweep.mixed.budgets=[6]", "+sweep.mixed.budgets_gb=[0.01]"]))
    plan = expand(sweep)
    quant = {s.format.name: s for s in plan.stages if s.kind is StageKind.QUANTIZE}
    return plan, quant


def test_the_assignment_targets_the_chosen_modules(tmp_path, planned):
    plan, quant = planned
    (cell,) = plan.sensitivity_cells
    _store_sensitivity(tmp_path, cell)
    fmt, record = assign(quant["mixed-6b"], plan.sensitivity_cells, {cell.key}, tmp_path)
    # 8 groups of 1000 weights at 4.25 bits; 6 bits afford one group in BF16 (5.72), not two (7.19): layer 2's down_proj
    assert record["groups"] == {"w4a16_rtn": 7, "bf16": 1}
    (dense,) = [g for g in record["assignment"] if g["format"] == "bf16"]
    assert dense["name"] == "model.layers.2.mlp.down_proj" and record["bits"] == pytest.approx(4.25 + 11.75 / 8)
    targets = fmt.mixed["assignment"]["w4a16_rtn"]
    assert "model.layers.2.mlp.down_proj" not in targets and "model.layers.2.self_attn.k_proj" in targets
    assert len(targets) == 3 * LAYERS + LAYERS - 1
    # the assignment is part of the recipe's key: the checkpoint is content-addressed on it
    assert fmt.recipe_key != quant["mixed-6b"].format.recipe_key


def test_a_missing_sensitivity_and_an_unreachable_gigabyte_budget_fail_in_one_line(tmp_path, planned):
    plan, quant = planned
    (cell,) = plan.sensitivity_cells
    with pytest.raises(Unresolved) as e:
        assign(quant["mixed-6b"], plan.sensitivity_cells, set(), tmp_path)
    assert e.value.error_class == "dependency_failed" and "has no result" in str(e.value)
    _store_sensitivity(tmp_path, cell)
    # 8,000 Linear weights + 8,000 others at 16 bits: 0.01 GB is far above the whole model in BF16
    with pytest.raises(Unresolved) as e:
        assign(quant["mixed-0.01gb"], plan.sensitivity_cells, {cell.key}, tmp_path)
    assert e.value.error_class == "bad_input" and "at or above the largest checkpoint" in str(e.value)
    assert "\n" not in str(e.value)

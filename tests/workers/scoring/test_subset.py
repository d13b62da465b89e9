"""Fixed, stratified, seeded subsets: every run scores the same items."""

from workers.scoring.lm_eval_scorer import select_subset

DOCS = [{"subject": s, "q": i} for i, s in enumerate(["a"] * 5 + ["b"] * 3 + ["c"] * 4)]


def test_stratified_one_per_group_is_deterministic():
    sub = {"per_group": 1, "group_field": "subject", "seed": 0}
    picked = select_subset(DOCS, sub)
    assert picked == select_subset(DOCS, sub)
    assert sorted(DOCS[i]["subject"] for i in picked) == ["a", "b", "c"]


def test_seed_changes_items_not_strata():
    a = select_subset(DOCS, {"per_group": 2, "group_field": "subject", "seed": 0})
    b = select_subset(DOCS, {"per_group": 2, "group_field": "subject", "seed": 7})
    assert len(a) == len(b) == 6 and a != b


def test_sized_sample_and_full_set():
    assert len(select_subset(DOCS, {"size": 5, "seed": 1})) == 5
    assert select_subset(DOCS, {"size": 50, "seed": 1}) == list(range(12))
    assert select_subset(DOCS, None) is None

"""A Sweep -> cells and stages, and what they will cost: `plan` (expansion, content-addressed
keys), `cost` (the cost model), `placement` (engine demand -> Ray bundles, cluster state),
`policy` (which ready stage runs next), `sizing` (subsets fitted to a time budget on this host),
`simulate` (the whole grid on N nodes, without running it). Pure Python, no Ray calls."""

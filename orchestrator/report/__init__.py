"""Results -> what a reader sees: `tables` (the console/markdown report), `paper` (the paper's
table layout, recovery per task), `analysis` (paired statistics), `recommend` (format per use
case under accuracy floors and latency limits), `plots` (matplotlib)."""

"""Stages -> results, and nothing lost on the way.

`scheduler` is the Ray event loop: it owns actors, attempts, leases and fallbacks and talks to
the rest only through the `Hooks` protocol (`hooks.py`), which `driver` implements over the
ledger; `stages` is the StageKind -> begin-call table; `failures` classifies an exception and
says how to recover. `run` (local), `submit` (a Ray job) and `preflight` start a sweep;
`sweep_lock` keeps one owner per sweep; `faults` holds the driver-side fault hooks the fault
tests arm (inert unless QUANTGRID_FAULTS is set).
"""

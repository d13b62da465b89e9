"""Test doubles shared by tests and bench/: the sleep-worker (a Ray actor with the real worker's
interface that sleeps instead of running models) and seeded synthetic sweeps."""

"""The work of each stage, one module per stage kind (see workers/actor.py for the calls)."""

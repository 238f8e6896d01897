"""The engine: plans a selection (with its cover), runs cases in worker processes, judges them, exports
and imports across versions, writes standalone repro scripts, and serves the pytest layer."""

"""The shared core every command stands on: the run directory and its one loader (``rundir``),
model and tokenizer loading (``modeling``), data loading and cleaning (``data``, ``datafiles``),
the hub (``hub``), the model card's facts (``provenance``) and console output (``console``).

Nothing here trains or serves; training/, apply/ and serving/ build on it.
"""

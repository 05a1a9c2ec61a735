"""hftk's benchmarks: ``python -m benchmarks [--quick]`` runs every row side by side and rewrites
the generated section of BENCHMARKS.md (command, date, machine, table).

- :mod:`benchmarks.machine`: what the machine is (CPU model, the flags that matter, GPU).
- :mod:`benchmarks.rows`: one function per row; each measures hftk and its baseline in the same
  run and returns a :class:`benchmarks.rows.Row` (or a row skipped with its reason).
- :mod:`benchmarks.__main__`: the command.

The older single-purpose scripts (``bench_eval.py``, ``bench_precision.py``,
``bench_export_int8.py``) stay for their hand-written sections of BENCHMARKS.md.
"""

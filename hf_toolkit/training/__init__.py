"""``hftk finetune``: the training flow (``train``) and what it needs: preflight checks of a run
(``preflight``), TrainingArguments from a recipe (``arguments``), the allocator setting
(``allocator``), the preprocessing cache, the dry-run plan, checkpoints, the run lock, stopping on
a signal, multi-process launch, throughput and the loss plot.
"""

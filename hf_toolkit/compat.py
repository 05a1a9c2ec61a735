"""Every place hftk depends on another library's private or fragile behaviour, in one module.

Each item says what it works around, for which versions (as installed when it was written:
transformers 5.x, torch 2.13, peft 0.21, huggingface_hub 1.x, datasets 4.x, sacrebleu 2.6,
uvicorn 0.55, Python 3.11) and how to drop it. ``tests/test_compat.py`` pins each one: a test
fails loudly when the library changes under it (the attribute is gone, the method renamed, the
behaviour fixed upstream). Nothing here imports a library at module level, and nothing here
imports hftk (this module sits in the lowest layer, beside :mod:`hf_toolkit.errors`).

Where a public API does the job, hftk uses it instead and nothing is listed here: the attention
implementations (``AttentionInterface().valid_keys()``), a trained BPE tokenizer handed to
transformers (``Tokenizer.from_str(bpe.to_str())``), and peft's default LoRA targets (exported
by ``peft.utils``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

# --------------------------------------------------------------------------------------------
# transformers' Trainer


def forward_hands_item_count_to_loss(model_class: type) -> bool | None:
    """Whether ``model_class.forward`` passes ``num_items_in_batch`` (or its ``**kwargs``) on to
    ``self.loss_function``: None when its source cannot be read.

    Works around: the Trainer decides ``model_accepts_loss_kwargs`` (and so scales the loss by the
    number of processes and skips the division by accumulation steps) from whether ``forward``
    takes ``**kwargs``, which nearly every transformers 5 model does, whether or not its loss reads
    the count (see :func:`hf_toolkit.training.train.pass_loss_kwargs_only_to_losses_that_read_them`).
    There is no public flag saying whether a model's loss honours the count, so the source is read.
    Versions: transformers 4.46-5.x. Drop it when models declare it (``accepts_loss_kwargs`` on
    every class) or the Trainer stops scaling for models whose loss ignores the count.
    """
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(model_class.forward))))
    except (OSError, TypeError, SyntaxError):
        return None
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "loss_function"
        and any(keyword.arg in (None, "num_items_in_batch") for keyword in node.keywords)
        for node in ast.walk(tree)
    )


class EvalInDatasetOrder:
    """Mixin for a ``transformers.Trainer`` subclass (before it in the bases): one process evaluates
    and predicts in dataset order, even under ``train_sampling_strategy: group_by_length``.

    Works around: transformers 5's private ``Trainer._get_eval_sampler`` length-groups evaluation
    batches too when training is length-grouped, so ``trainer.predict`` returns rows in another
    order than the dataset's; extractive QA pairs each window's logits with the window at the same
    position and would silently pair them wrongly. Several processes: Accelerate shards in order
    and gathers in order, so the Trainer's choice (None) stands. Versions: transformers 5.0-5.x
    (4.x evaluated sequentially). Drop it when evaluation stops length-grouping, or when
    ``predict`` takes a sampler.
    """

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        from torch.utils.data import SequentialSampler

        if eval_dataset is None or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)


def prepare_inputs(trainer: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """A batch moved to the trainer's device as its own steps do (``Trainer._prepare_inputs``).

    Works around: an overridden ``prediction_step`` (the documented way to change evaluation)
    must prepare its inputs as the Trainer does, and only the private method does it. Versions:
    transformers 4.x-5.x. Drop it if the Trainer makes it public, or move the batch with
    ``accelerate``'s ``send_to_device`` when nothing else it does matters.
    """
    return trainer._prepare_inputs(inputs)


def initial_training_values(trainer: Any, dataloader: Any) -> dict[str, Any]:
    """The Trainer's own step arithmetic by name: epochs, update steps per epoch, total batch size
    and optimizer steps.

    Works around: ``Trainer.set_initial_training_values`` (public, undocumented) returns a
    7-tuple whose order is its only contract. Versions: transformers 4.45-5.x. Drop it if the
    Trainer exposes the values by name.
    """
    values = trainer.set_initial_training_values(trainer.args, dataloader)
    epochs, per_epoch, _, _, total_batch, _, max_steps = values
    return {"epochs": epochs, "steps_per_epoch": per_epoch, "total_batch_size": total_batch, "max_steps": max_steps}


def attn_implementation(config: Any) -> str | None:
    """The attention implementation a loaded model runs (``'sdpa'``, ``'eager'``, ...), from its config.

    Works around: transformers keeps the resolved implementation in the config's private
    ``_attn_implementation`` (the public ``attn_implementation`` argument is what was asked, before
    transformers resolves the default). Versions: transformers 4.36-5.x. Drop it when the config
    exposes the resolved value publicly.
    """
    return getattr(config, "_attn_implementation", None)


# --------------------------------------------------------------------------------------------
# transformers' models


MASKED_LM_HEADS = {
    "BertForMaskedLM": "cls",
    "RobertaForMaskedLM": "lm_head",
    "XLMRobertaForMaskedLM": "lm_head",
    "DistilBertForMaskedLM": "vocab_transform",
}
"""Masked-LM classes whose vocabulary head can be run on the masked positions only, and the name of
the head's first module: its input is the encoder's last hidden states at every position, and
every later step of the head works position by position (BERT's ``cls``: transform, layer norm,
decoder; RoBERTa's and XLM-R's ``lm_head``; DistilBERT's ``vocab_transform`` -> activation ->
``vocab_layer_norm`` -> ``vocab_projector``), and ``forward``'s loss is a plain
``CrossEntropyLoss()`` mean over the labels that are not -100."""


def masked_lm_head(model: Any) -> Any:
    """The first module of `model`'s vocabulary head (see :data:`MASKED_LM_HEADS`), or None for any
    other model (a LoRA-wrapped or compiled one too: their class is another).

    Works around: transformers' masked-LM models compute vocabulary logits at every position,
    though the loss reads only the ~15% that are masked; for a small model with a large vocabulary
    those logits are most of the step (:class:`hf_toolkit.tasks.trainers.MaskedPositionsTrainer`).
    No public option restricts them (ModernBERT's ``sparse_prediction`` is that model's own), so
    the head is found by its attribute name, which is library-internal. Versions: transformers
    4.x-5.x. Drop it if transformers gains such an option for these models.
    """
    name = MASKED_LM_HEADS.get(type(model).__name__)
    return getattr(model, name, None) if name is not None else None


# --------------------------------------------------------------------------------------------
# What the libraries print


TRANSFORMERS_NOTES = (
    "was set in the config but it is unrecognized. Using the default loss",
    "We strongly recommend passing in an `attention_mask` since your input_ids may be padded",
)
"""transformers' log notes hftk drops, matched by their text (they carry no code or logger of
their own). Versions: transformers 5.x. Drop an entry when transformers stops printing it."""
TRANSFORMERS_BARS = ("Loading weights", "Writing model shards")
"""transformers' progress bars hftk turns off, matched by their ``desc``. Versions: transformers 5.x."""
MISSING_KEYS_WARNING = "There were missing keys in the checkpoint model loaded: "
"""The head of the Trainer's warning (logger ``transformers.trainer``, then the keys as a Python
list) when a resumed checkpoint lacks keys: it names a tied weight (GPT-2's ``lm_head.weight``)
that save_pretrained leaves out by design; hftk drops it then (:func:`hf_toolkit.core.console.
tied_weights_unmentioned`). Versions: transformers 5.x (``Trainer._issue_warnings_after_load``
ties such keys silently only for models that list them in ``_keys_to_ignore_on_save``, which
GPT-2 no longer does). Drop it when transformers stops warning about tied keys."""
LOAD_REPORT = "LOAD REPORT"
"""The heading of transformers 5's table of missing/unexpected/mismatched weights (logged as one
message, rows ``key | STATUS | ...``), which hftk shortens to one line."""


def warning_filters_changed() -> None:
    """Tell :mod:`warnings` that ``warnings.filters`` was edited by hand (an entry removed).

    Works around: there is no public way to remove one filter; after editing the list, the C
    accelerator's cache must be invalidated (``warnings._filters_mutated``; Python 3.13 renamed it
    ``_filters_mutated_lock_held``), or a removed "ignore" keeps applying to warnings seen before.
    Versions: CPython 3.4-3.14. Drop it when ``warnings`` gains a public way to remove a filter.
    """
    import warnings

    mutated = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held")
    mutated()


# --------------------------------------------------------------------------------------------
# The Hugging Face hub


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``, or :func:`hub_cache_only`)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def hub_cache_only() -> Iterator[None]:
    """Within the block, huggingface_hub and datasets read the local cache only, as
    ``HF_HUB_OFFLINE=1`` does; the previous setting comes back after it.

    Works around: both libraries read ``HF_HUB_OFFLINE`` once, at import, into module constants
    (``huggingface_hub.constants.HF_HUB_OFFLINE``, and datasets' own copy in ``datasets.config``),
    and offer no runtime switch; hftk sets them for a model it knows is cached while the hub is
    unreachable, so nothing waits on the network. Versions: huggingface_hub 0.20-1.x, datasets
    2.x-4.x. Drop it when both read the variable at call time or offer a switch.
    """
    import datasets
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


# --------------------------------------------------------------------------------------------
# torch


def sdpa_backend(query: Any, mask: Any, dropout: float) -> Any:
    """The ``SDPBackend`` torch's ``scaled_dot_product_attention`` picks for these inputs.

    Works around: torch has no public way to ask which kernel SDPA will run; its dispatcher's own
    choice is ``torch._fused_sdp_choice``. Versions: torch 2.0-2.13. Drop it when torch exposes
    the choice (or hftk stops logging the kernel).
    """
    import torch
    from torch.nn.attention import SDPBackend

    return SDPBackend(torch._fused_sdp_choice(query, query, query, mask, dropout, False))


# --------------------------------------------------------------------------------------------
# sacreBLEU


def bootstrap_estimate(score: Any) -> tuple[float, float]:
    """(mean, 95% half-width) of the bootstrap resampling ``corpus_score(n_bootstrap=N)`` ran.

    Works around: sacreBLEU keeps the estimate in private fields of the returned Score
    (``_mean``, ``_ci``: what its ``mu = x +/- y`` prints) and returns it nowhere else. Versions:
    sacrebleu 2.0-2.6. Drop it when sacreBLEU returns the estimate publicly.
    """
    return float(score._mean), float(score._ci)


# --------------------------------------------------------------------------------------------
# uvicorn


class ServerExitsCleanly:
    """Mixin for a ``uvicorn.Server`` subclass (before it in the bases): SIGTERM/SIGINT shut the
    server down gracefully and the process then exits with status 0.

    Works around: uvicorn's ``Server.capture_signals`` (undocumented) re-raises the signal once it
    has shut down, so the process dies of it (status -15); a service manager or test asking the
    server to stop should see it stop cleanly. Outside the main thread signals cannot be set, as in
    uvicorn. Versions: uvicorn 0.29-0.55. Drop it if uvicorn gains an option not to re-raise.
    """

    def handle_exit(self, sig: int, frame: Any) -> None:
        # uvicorn's signal handler (undocumented; the one capture_signals installs): the app hears of
        # the signal first, while uvicorn's grace period is still whole.
        self.on_exit_signal()
        super().handle_exit(sig, frame)  # type: ignore[misc]

    def on_exit_signal(self) -> None:
        """Called when SIGTERM/SIGINT arrives, before uvicorn starts its graceful shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

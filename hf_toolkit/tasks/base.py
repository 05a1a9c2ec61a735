"""The task contract: everything generic code (training, generation, evaluation, prediction)
asks of a task, as one class with a default for every optional hook.

A base class with defaults rather than a bare ABC with every method abstract: most hooks have
one obvious behaviour that five of the six tasks share (no model-config settings, the Trainer's
own evaluation, plain prompt encoding, no ``hftk predict`` records), and spelling it out six
times would hide what each task really changes. What no default can give, turning splits into
features (:meth:`Task.prepare`), is abstract, so a task without it cannot be instantiated; and
every task names its ``name`` and ``auto_class``.

A task also owns its recipe ``data`` options: :attr:`Task.Data` subclasses
:class:`~hf_toolkit.recipe.schema.DataSection`, and the recipe's ``data`` section is validated
with the class of the recipe's ``task``. Instances are stateless; :data:`hf_toolkit.tasks.TASKS`
is the one table of them. Models are loaded by the callers (``hf_toolkit.core.rundir``) and passed in.

Everything else task-specific is an attribute here too, read by generic code that names no task:
the model heads that mean the task (``architectures``: how :mod:`hf_toolkit.core.rundir` knows a
model directory without a recipe), and for a task that predicts, its ``hftk serve`` route
(``endpoint``, with the JSON body ``request``: a plain pydantic model whose fields are named by
input role), the input role one value of which serves every input (``shared_input``) and the
roles an input may not leave empty (``nonempty_inputs``); and what its data rows hold: the roles
of free text that ``data.strip_html`` and ``data.normalize_whitespace`` clean (``text_roles``)
and those a training row may not leave empty (``nonempty_roles``), which
:mod:`hf_toolkit.core.data` is handed, as it names no role itself; and what ``hftk compare`` ranks
its models by (``compare_metric``, a :class:`CompareMetric`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from pydantic import BaseModel

from hf_toolkit.core import modeling, readable
from hf_toolkit.errors import HftkError, Problem
from hf_toolkit.recipe.schema import DataSection, Recipe

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

Texts = Union[str, list[str]]
"""One input text, or a list of them (a batch): a role's field in a task's serve ``request``."""

# Tasks whose examples vary in length batch them by length (transformers' LengthGroupedSampler:
# random mega-batches of 50 batches, each sorted by length), so dynamic padding pads little; the
# engine's default samples at random and pads every batch to its longest example. Measured in
# BENCHMARKS.md (python -m benchmarks, the batching rows).
LENGTH_GROUPED: dict[str, Any] = {"train_sampling_strategy": "group_by_length"}


@dataclass(frozen=True)
class CompareMetric:
    """What ``hftk compare`` ranks a task's models by, and what work it times.

    ``metric`` is the :mod:`hf_toolkit.metrics` name scored as ``hftk eval --model -m METRIC`` scores it,
    ``key`` the key of its scores shown, ``higher_is_better`` its direction. ``timing`` is the work
    latency and throughput measure: ``predict`` (``hftk predict``'s records; rows/s), ``generate``
    (one generate call per row with the run's generation settings; rows/s) or ``score`` (a forward
    pass over each text, the work perplexity and masked-token scoring do; tokens/s).
    """

    metric: str
    key: str
    higher_is_better: bool
    timing: Literal["predict", "generate", "score"]

    @property
    def unit(self) -> str:
        """What throughput counts: ``tokens`` for scored text, else ``rows``."""
        return "tokens" if self.timing == "score" else "rows"


class Task(ABC):
    """One task hftk trains and applies. Class attributes describe it; methods are its hooks."""

    name: ClassVar[str]
    auto_class: ClassVar[str]
    """Name of the transformers Auto class of the task's model (``AutoModelForCausalLM``)."""
    Data: ClassVar[type[DataSection]] = DataSection
    """The task's ``data`` section: common options plus its own, with their defaults."""
    roles: ClassVar[tuple[str, ...]]
    """Data roles the task needs (``data.columns`` maps columns onto them)."""
    optional_roles: ClassVar[tuple[str, ...]] = ()
    """Roles used when present (``text_pair``, ``id``)."""
    target_roles: ClassVar[tuple[str, ...]] = ()
    """Roles that hold the answer, not the input: absent when a trained model is applied."""
    seq2seq_trainer: ClassVar[bool] = False
    """Train with Seq2SeqTrainer / Seq2SeqTrainingArguments."""
    peft_task_type: ClassVar[str | None] = None
    """peft's TaskType name for LoRA; it makes peft keep task heads fully trainable and saved."""
    training_defaults: ClassVar[dict[str, Any]] = {}
    """TrainingArguments defaults for the task, applied unless the recipe's ``training`` sets the key."""
    eval_metrics: ClassVar[tuple[str, ...]] = ()
    """:mod:`hf_toolkit.metrics` names ``hftk eval --model`` scores by default."""
    generates: ClassVar[bool] = False
    """The trained model writes text (``hftk generate``), so a ``generation`` section applies."""
    continues_prompt: ClassVar[bool] = True
    """A generated text continues its prompt (a language model) rather than answering it."""
    accepts_model_pair: ClassVar[bool] = False
    """``model.encoder`` + ``model.decoder`` (an EncoderDecoderModel) is a model for this task."""
    architectures: ClassVar[tuple[str, ...]] = ()
    """Endings of ``config.architectures`` names whose head means this task (``ForSequenceClassification``):
    how a model directory without an hftk recipe is recognised and loaded (with :attr:`auto_class`).
    Tasks that share a head (summarization and translation) each list it; such a model loads, but
    its task stays unknown."""
    predicts: ClassVar[bool] = False
    """``hftk predict`` applies the trained model (:meth:`predict_records`), and ``hftk serve`` at :attr:`endpoint`."""
    endpoint: ClassVar[str | None] = None
    """A task that predicts: the path ``hftk serve`` answers its records at (``/v1/classify``)."""
    request: ClassVar[type[BaseModel] | None] = None
    """A task that predicts: the JSON body of :attr:`endpoint`, a pydantic model whose fields are its
    input roles (each :data:`Texts`), plus its :meth:`predict_records` options (``top_k``)."""
    shared_input: ClassVar[str | None] = None
    """An input role of which one value may serve every input (question answering: one context for all questions)."""
    nonempty_inputs: ClassVar[tuple[str, ...]] = ()
    """Input roles that may not be empty or blank in ``hftk predict`` and ``hftk serve`` (a text to classify),
    as they may not be in training data."""
    compare_metric: ClassVar[CompareMetric | None] = None
    """What ``hftk compare`` ranks the task's models by; None: compare refuses the task."""
    distills: ClassVar[bool] = False
    """A recipe's ``distillation`` section applies: :meth:`distillation_logits` names what the soft loss compares."""
    cache_prepared: ClassVar[bool] = True
    """:meth:`prepare`'s output depends only on the splits, the tokenizer(s), the model config and the
    recipe's ``data`` options, and is all there is to it, so :mod:`hf_toolkit.training.prepcache` may keep it and
    skip ``prepare`` next time. False for a task whose ``prepare`` also changes the tokenizer or model,
    or keeps state elsewhere."""

    @property
    def input_roles(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(required, optional) roles of the input a trained model reads: the roles without targets and ids."""
        required = tuple(r for r in self.roles if r not in self.target_roles)
        return required, tuple(r for r in self.optional_roles if r != "id")

    @property
    def text_roles(self) -> tuple[str, ...]:
        """Roles that hold free text, cleaned when the recipe sets ``data.strip_html`` or
        ``data.normalize_whitespace`` (in training data, in the rows ``hftk eval --model`` reads, and
        in ``hftk predict``'s and ``hftk serve``'s inputs: :attr:`input_text_roles`). Default: the input
        roles. A task whose targets are text too (summaries, translations) sets its own tuple."""
        required, optional = self.input_roles
        return required + optional

    @property
    def input_text_roles(self) -> tuple[str, ...]:
        """The :attr:`text_roles` cleaned in what a trained model is given to predict from (``hftk predict``,
        ``hftk serve``): all of them, unless the inputs hold markup the cleaning would take away."""
        return self.text_roles

    @property
    def nonempty_roles(self) -> tuple[str, ...]:
        """Roles whose empty (blank or missing) value makes a training example meaningless: such rows are
        refused, or dropped with ``data.drop_empty``. Default: every required role. A language model, for
        which an empty line is just a paragraph break, sets ``()``."""
        return self.roles

    # ----------------------------------------------------------------------------------------
    # Recipe checks

    def check_recipe(self, recipe: Recipe) -> list[Problem]:
        """Pass one (no I/O): settings the task cannot honour. Subclasses add to this list."""
        problems = []
        used = self.roles + self.optional_roles
        problems += [
            Problem(("data", "columns", role), f"task {self.name} reads no '{role}' column (its roles: {', '.join(used)}); remove it")
            for role in recipe.data.columns if role not in used
        ]
        if not self.generates:
            problems += [Problem(("generation", key), f"task {self.name} does not generate text, so decoding settings "
                                                      "do not apply; remove the generation section")
                         for key in recipe.generation.given()]
        if recipe.model.is_pair and not self.accepts_model_pair:
            side = "encoder" if recipe.model.encoder is not None else "decoder"
            problems.append(Problem(("model", side), f"an encoder-decoder pair is for task summarization or translation, "
                                                     f"not {self.name}; use model.name_or_path"))
        return problems

    def check_environment(self, recipe: Recipe) -> list[Problem]:
        """Pass two: settings that can only be judged with the model config at hand (no weights)."""
        return []

    # ----------------------------------------------------------------------------------------
    # Training

    def auto_model(self, recipe: Recipe | None = None) -> Any:
        """The transformers Auto class that builds and loads this task's model (for `recipe`)."""
        import transformers

        return getattr(transformers, self.auto_class)

    def read_rows(self, dataset: "Dataset", data: DataSection, *, where: str) -> "Dataset":
        """Rows as loaded from a file or the hub, reshaped before columns are mapped to roles
        (translation reads the ``{"translation": {lang: text}}`` format here)."""
        return dataset

    def model_config(self, recipe: Recipe, splits: "DatasetDict") -> dict[str, Any]:
        """Task settings applied to the model config (e.g. ``num_labels``); may check the data."""
        return {}

    def build_model(self, recipe: Recipe, splits: "DatasetDict") -> tuple[Any, Any]:
        """(tokenizer, model): the recipe's tokenizer (loaded, or trained on the training split's
        :attr:`text_roles`) and model with the task's config."""
        train = splits["train"]
        train_texts = ([text for role in self.text_roles if role in train.column_names for text in train[role]]
                       if recipe.model.train_tokenizer is not None else None)
        tokenizer = modeling.load_tokenizer(recipe.model, train_texts)
        model = modeling.load_model(self.auto_model(recipe), recipe.model, tokenizer, **self.model_config(recipe, splits))
        return tokenizer, model

    @abstractmethod
    def prepare(self, recipe: Recipe, splits: "DatasetDict", tokenizer: Any, model: Any) -> "DatasetDict":
        """Tokenized splits ready for the Trainer."""

    def trainer_kwargs(self, recipe: Recipe, tokenizer: Any, model: Any) -> dict[str, Any]:
        """Trainer arguments besides model, args, datasets and tokenizer: collator, compute_metrics, ..."""
        return {}

    def trainer_class(self) -> Any:
        """The Trainer class (Seq2SeqTrainer for seq2seq tasks)."""
        from transformers import Seq2SeqTrainer, Trainer

        return Seq2SeqTrainer if self.seq2seq_trainer else Trainer

    def target_tokenizer(self, recipe: Recipe, tokenizer: Any) -> Any:
        """The tokenizer that writes targets; one other than `tokenizer` is saved in the run directory."""
        return tokenizer

    def evaluate(self, trainer: Any, recipe: Recipe, examples: "Dataset", features: "Dataset", prefix: str) -> dict[str, float]:
        """Score one split at the end of training (keys prefixed ``eval``/``test``, the loss included).

        `examples` is the split as loaded (role columns), `features` the prepared split. Tasks
        scored on examples rather than on features (question answering) override this.
        """
        last = evaluation_of_final_weights(trainer) if prefix == "eval" else None
        return self.finish_metrics(last if last is not None else trainer.evaluate(features, metric_key_prefix=prefix), prefix)

    def finish_metrics(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Derived numbers added to an evaluation's output (e.g. perplexity)."""
        return metrics

    def distillation_logits(self, outputs: Any, inputs: dict[str, Any]) -> list[tuple[Any, Any]]:
        """Knowledge distillation: the logits of one batch's `outputs` that the soft loss compares
        between student and teacher, each with the boolean mask of the positions that carry a label
        (``inputs`` is the batch). Several pairs (QA's start and end) are averaged."""
        raise HftkError(f"task {self.name} cannot be distilled")

    # ----------------------------------------------------------------------------------------
    # hftk finetune --dry-run

    def loss_view(self, recipe: Recipe, tokenizer: Any, model: Any, example: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
        """One training example as the collator hands it to the model (plain lists), decoded to text in
        named parts, each a list of (text, carries loss) pieces, for ``hftk finetune --dry-run``.

        Default: ``input_ids`` with the tokens whose ``labels`` are -100 carrying no loss (packed
        language-model blocks carry loss everywhere; a decoder-only prompt none). Tasks whose loss
        lives elsewhere (a label, answer positions, a decoder's target) override this.
        """
        ids, labels = example["input_ids"], example.get("labels")
        carries = [label != IGNORE_INDEX for label in labels] if isinstance(labels, list) and len(labels) == len(ids) else [True] * len(ids)
        return {"input": loss_pieces(tokenizer, ids, carries)}

    def truncation_limit(self, recipe: Recipe, tokenizer: Any, model: Any) -> int | None:
        """Tokens of an input (its input roles together, special tokens included) beyond which
        :meth:`prepare` cuts it; None when the task packs text into blocks and cuts nothing."""
        return None

    # ----------------------------------------------------------------------------------------
    # Applying a trained model

    def default_metrics(self, dataset: "Dataset") -> tuple[str, ...]:
        """The metrics ``hftk eval --model`` scores `dataset` (role columns) with when none is named."""
        return self.eval_metrics

    def metric_options(self, recipe: Recipe | None) -> dict[str, Any]:
        """Options for the task's metrics in ``hftk eval --model`` (e.g. macro averaging)."""
        return {}

    def encode_prompts(self, recipe: Recipe | None, tokenizer: Any, model: Any, prompts: list[str]) -> list[list[int]]:
        """Input ids ``hftk generate`` feeds the model, encoded as training encoded its inputs."""
        return tokenizer(prompts)["input_ids"]

    def check_eval_rows(self, config: Any, dataset: "Dataset") -> None:
        """Before the weights load: rows ``hftk eval --model`` cannot score with a model of `config`."""

    def predict(self, model: Any, tokenizer: Any, recipe: Recipe | None, dataset: "Dataset",
                generate: Callable[[list[str]], list[str]]) -> tuple[Any, Any]:
        """(predictions, references) over `dataset` (role columns) in the layout the task's metrics take.

        `generate` turns prompts into texts the way ``hftk generate`` does, for generative tasks.
        """
        raise HftkError(f"hftk eval --model does not score {self.name} runs yet")

    def prediction_rows(self, model: Any, tokenizer: Any, dataset: "Dataset", predictions: Any, references: Any) -> list[dict[str, Any]]:
        """The rows of ``hftk eval --model``'s ``<data>.predictions.jsonl``: per item its inputs (by
        role), prediction and reference, as people read them (label names, not ids)."""
        if references and isinstance(references[0], list) and len(references) != len(predictions):
            references = list(zip(*references))  # sacreBLEU streams -> per item
        required, optional = self.input_roles
        inputs = {role: list(dataset[role]) for role in required + optional if role in dataset.column_names}
        return [{**{role: column[i] for role, column in inputs.items()}, "prediction": p, "reference": r}
                for i, (p, r) in enumerate(zip(predictions, references))]

    def share_inputs(self, rows: dict[str, list[str]]) -> dict[str, list[str]]:
        """Inputs as given -> one value of each role per input: a single :attr:`shared_input` value
        is repeated for every input of the other roles."""
        shared = rows.get(self.shared_input or "", [])
        others = [len(values) for role, values in rows.items() if role != self.shared_input]
        if len(shared) == 1 and others and max(others) > 1:
            return {**rows, self.shared_input: shared * max(others)}
        return rows

    def check_inputs(self, rows: dict[str, list[str]], where: Callable[[str, int], str]) -> None:
        """Refuse (HftkError) an input whose :attr:`nonempty_inputs` text is empty or blank, before any
        model runs; `where(role, index)` names it as the user gave it (``--text 2``, ``text[1]``)."""
        for role in self.nonempty_inputs:
            empty = [i for i, value in enumerate(rows.get(role, [])) if not value.strip()]
            if empty:
                raise HftkError(f"{where(role, empty[0])}: the {role} is empty; a {self.name} model needs a "
                                f"non-empty {role} to predict from (give one, or leave that input out)")

    def predict_records(self, model: Any, tokenizer: Any, recipe: Recipe | None, inputs: dict[str, list], **options: Any) -> list[dict[str, Any]]:
        """``hftk predict``: one plain-data record per input row (`inputs` maps input roles to lists)."""
        raise HftkError(f"a {self.name} model does not predict: it generates text; use hftk generate --model RUN --prompt '...'")

    def format_record(self, record: dict[str, Any]) -> str:
        """One ``hftk predict`` record for a terminal (the --json output is the record itself)."""
        return str(record)


IGNORE_INDEX = -100
"""Label of a position that carries no loss."""


def loss_pieces(tokenizer: Any, ids: list[int], carries: list[bool]) -> list[tuple[str, bool]]:
    """`ids` decoded in runs of equal `carries`: [(text, carries loss), ...] (padding left out)."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    pad = tokenizer.pad_token_id
    for end in range(1, len(ids) + 1):
        if end == len(ids) or carries[end] != carries[start]:
            run = [t for t in ids[start:end] if t != pad or carries[start]]
            if run:
                pieces.append((readable.decode(tokenizer, run), carries[start]))
            start = end
    return pieces


def add_perplexity(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Add ``<prefix>_perplexity`` = exp(mean token cross-entropy) next to ``<prefix>_loss``."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(loss) if loss < 700 else math.inf
    return metrics


def evaluation_of_final_weights(trainer: Any) -> dict[str, float] | None:
    """The in-training evaluation of the validation split at the last step, if there was one.

    With ``eval_strategy: epoch`` (or steps that divide the total) the Trainer has already scored
    the final weights; evaluating again would repeat the work (for seq2seq, all the generation).
    Not when ``load_best_model_at_end`` swapped in other weights after that evaluation.
    """
    if trainer.args.load_best_model_at_end:
        return None
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") != trainer.state.global_step:
                return None
            return {key: value for key, value in entry.items() if key != "step"}
    return None

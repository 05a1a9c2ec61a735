"""Text classification (sentiment and any single- or pair-text labels): BERT, GPT-2, any ``AutoModelForSequenceClassification``.

Reads top to bottom: the data options, the label set (read from the training split), the model
it builds, how texts become token ids, and the metrics it reports.

Labels may be integers (``0``/``1``, or ``1``..``5`` stars) or strings (``negative``/``positive``);
a ``datasets.ClassLabel`` column (hub datasets such as GLUE) keeps its own names. The label set is
the one seen in ``data.train`` (sorted), stored in the model config as ``id2label``/``label2id`` so a
saved model prints names; a validation/test label outside it is a :class:`DataError`. A strongly
imbalanced training set (largest class >= :data:`IMBALANCE_RATIO` x the smallest) gets a visible warning.

Texts are truncated to ``data.max_length`` tokens (default: min(512, the model's context)) and
padded per batch (dynamic padding). GPT-2 pads with its EOS token; ``GPT2ForSequenceClassification``
reads the config's ``pad_token_id`` to find each text's last real token (set in ``modeling.load_model``).

Evaluation reports accuracy and macro-averaged precision, recall and F1 (keys ``accuracy``,
``precision``, ``recall``, ``f1``), computed by :mod:`hf_toolkit.metrics` (scikit-learn).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator

from hf_toolkit import metrics
from hf_toolkit.core import modeling, readable
from hf_toolkit.errors import DataError, Problem
from hf_toolkit.recipe.schema import DataSection, Recipe
from hf_toolkit.tasks.base import LENGTH_GROUPED, CompareMetric, Task, Texts

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

IMBALANCE_RATIO = 5
DEFAULT_MAX_LENGTH = 512
# Accuracy and macro-averaged precision/recall/F1, at every evaluation and in `hftk eval --model`
# (an explicit --average wins there).
METRICS = ("accuracy", "precision", "recall", "f1")
METRIC_OPTIONS = {"average": "macro"}

logger = logging.getLogger("hftk")


class TextClassificationData(DataSection):
    """``data`` options of text-classification."""

    max_length: int | None = Field(None, ge=8, description="Tokens per text (pair); null: min(512, the model's context).")
    labels: list[str | int] | None = Field(
        None, min_length=2, description="The label set, in id order (e.g. [neg, pos]); a row with another label is an error. "
        "null: the labels seen in data.train, sorted.")

    @field_validator("labels")
    @classmethod
    def _distinct(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None and len({str(v) for v in value}) < len(value):
            raise ValueError(f"labels are listed twice: {value}; list each label once")
        return value


class ClassifyRequest(BaseModel):
    """``POST /v1/classify`` (hftk serve): one text (pair) or a list."""

    text: Texts = Field(..., description="Text(s) to classify.")
    text_pair: Texts | None = Field(None, description="Second text of each pair (one per text).")


class TextClassification(Task):
    name = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    Data = TextClassificationData
    roles = ("text", "label")
    optional_roles = ("text_pair",)
    target_roles = ("label",)
    peft_task_type = "SEQ_CLS"
    training_defaults = LENGTH_GROUPED
    eval_metrics = METRICS
    compare_metric = CompareMetric("accuracy", "accuracy", higher_is_better=True, timing="predict")
    architectures = ("ForSequenceClassification",)
    predicts = True
    endpoint = "/v1/classify"
    request = ClassifyRequest
    nonempty_inputs = ("text",)  # an empty text has nothing to classify (training data refuses it too)
    distills = True

    def read_rows(self, dataset: "Dataset", data: DataSection, *, where: str) -> "Dataset":
        """Rows as loaded; with ``data.labels``, every label must be one of them (row numbers of the file)."""
        labels = getattr(data, "labels", None)
        if labels is not None:
            check_declared_labels(dataset, data.columns.get("label", "label"), [str(v) for v in labels], where=where)
        return dataset

    def check_recipe(self, recipe: Recipe) -> list[Problem]:
        """``model.config.num_labels`` (the transformers docs' way to size the head) agrees with ``data.labels``."""
        problems = super().check_recipe(recipe)
        given, declared = recipe.model.config.get("num_labels"), recipe.data.labels
        if not isinstance(given, (int, float)) or isinstance(given, bool):
            return problems  # absent, or of the wrong type: the config check says so
        if not float(given).is_integer():
            problems.append(Problem(("model", "config", "num_labels"), f"{given} is not a whole number of labels"))
        elif declared is not None and given != len(declared):
            problems.append(Problem(("model", "config", "num_labels"), f"{given}, but data.labels lists {len(declared)} "
                                    f"([{', '.join(map(str, declared))}]); the labels size the head: remove num_labels "
                                    "or make the two agree"))
        return problems

    def model_config(self, recipe: Recipe, splits: "DatasetDict") -> dict[str, Any]:
        """num_labels and the id <-> name maps, stored in config.json so predictions print names."""
        declared = recipe.data.labels if recipe is not None else None
        names = [str(v) for v in declared] if declared is not None else label_names(splits)
        if len(names) < 2:
            raise DataError(f"data.train: only one label ({names[0]!r}); a classifier needs at least two")
        given = recipe.model.config.get("num_labels") if recipe is not None else None
        if given is not None and given != len(names):
            raise DataError(f"model.config.num_labels is {given}, but data.train has {len(names)} labels "
                            f"({', '.join(names)}); the labels size the head: remove num_labels, or declare the "
                            "label set with data.labels: [...] (a label no row has yet counts too)")
        check_labels(splits, names)
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
            "problem_type": "single_label_classification",
        }

    def prepare(self, recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
        """Tokenize text (and text_pair) with truncation; labels become ids. Padding happens per batch."""
        max_length = max_length_for(recipe.data.max_length, model)
        label2id = model.config.label2id
        names = list(label2id)

        def tokenize(batch: dict[str, list], class_label: bool) -> dict[str, list]:
            pairs = batch["text_pair"] if "text_pair" in batch else None
            encoded = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
            encoded["labels"] = [label2id[label_key(v, names, class_label)] for v in batch["label"]]
            return encoded

        return type(splits)({
            name: dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {name}",
                              fn_kwargs={"class_label": is_class_label(dataset)})
            for name, dataset in splits.items()
        })

    def trainer_kwargs(self, recipe: Recipe, tokenizer, model) -> dict[str, Any]:
        """Dynamic padding, and accuracy + macro precision/recall/F1 at every evaluation."""
        from transformers import DataCollatorWithPadding

        def compute_metrics(eval_prediction) -> dict[str, float]:
            logits = eval_prediction.predictions
            logits = logits[0] if isinstance(logits, tuple) else logits
            return metrics.compute(METRICS, logits.argmax(-1).tolist(), eval_prediction.label_ids.tolist(), **METRIC_OPTIONS)

        return {"data_collator": DataCollatorWithPadding(tokenizer), "compute_metrics": compute_metrics}

    def distillation_logits(self, outputs, inputs: dict[str, Any]) -> list[tuple[Any, Any]]:
        """The class logits of every example (each carries a label)."""
        import torch

        return [(outputs.logits, torch.ones(outputs.logits.shape[0], dtype=torch.bool, device=outputs.logits.device))]

    def loss_view(self, recipe: Recipe, tokenizer, model, example: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
        """The text (no loss of its own) and the label the loss is computed on."""
        return {"input": [(readable.decode(tokenizer, example["input_ids"]), False)],
                "label": [(str(model.config.id2label[int(example["labels"])]), True)]}

    def truncation_limit(self, recipe: Recipe, tokenizer, model) -> int | None:
        return max_length_for(recipe.data.max_length, model)

    # ----------------------------------------------------------------------------------------
    # Inference (hftk predict, hftk eval --model)

    def metric_options(self, recipe: Recipe | None) -> dict[str, Any]:
        return dict(METRIC_OPTIONS)

    def check_eval_rows(self, config, dataset: "Dataset") -> None:
        reference_ids(config, dataset)

    def predict(self, model, tokenizer, recipe: Recipe | None, dataset: "Dataset", generate) -> tuple[list[int], list[int]]:
        """(predicted label ids, reference label ids) for `dataset` (role columns, see :func:`hf_toolkit.core.data.eval_rows`)."""
        references = reference_ids(model.config, dataset)
        pairs = list(dataset["text_pair"]) if "text_pair" in dataset.column_names else None
        max_length = recipe.data.max_length if recipe is not None else None
        probabilities = classify(model, tokenizer, list(dataset["text"]), pairs, max_length=max_length)
        return [max(range(len(p)), key=p.__getitem__) for p in probabilities], references

    def prediction_rows(self, model, tokenizer, dataset: "Dataset", predictions, references) -> list[dict[str, Any]]:
        """``{"text", ["text_pair"], "prediction", "reference"}`` with label names."""
        names = model.config.id2label
        return super().prediction_rows(model, tokenizer, dataset, [names[p] for p in predictions], [names[r] for r in references])

    def predict_records(self, model, tokenizer, recipe: Recipe | None, inputs: dict[str, list], *, batch_size: int = 16,
                        **options: Any) -> list[dict[str, Any]]:
        """``{"text", ["text_pair"], "label", "score", "probabilities": {label: p}}`` per text (pair)."""
        pairs = inputs.get("text_pair") or None
        max_length = recipe.data.max_length if recipe is not None else None
        probabilities = classify(model, tokenizer, inputs["text"], pairs, max_length=max_length, batch_size=batch_size)
        names = [model.config.id2label[i] for i in range(len(probabilities[0]))] if probabilities else []
        records = []
        for i, p in enumerate(probabilities):
            best = max(range(len(p)), key=p.__getitem__)
            record: dict[str, Any] = {"text": inputs["text"][i]}
            if pairs is not None:
                record["text_pair"] = pairs[i]
            record.update(label=names[best], score=p[best], probabilities=dict(zip(names, p)))
            records.append(record)
        return records

    def format_record(self, record: dict[str, Any]) -> str:
        pair = f" || {record['text_pair']}" if "text_pair" in record else ""
        return f"{record['label']}\t{record['score']:.4f}\t{record['text']}{pair}"


# --------------------------------------------------------------------------------------------
# Labels


def label_names(splits: "DatasetDict") -> list[str]:
    """The label set, in id order: a ClassLabel's names, else the sorted labels seen in train."""
    from datasets import ClassLabel

    feature = splits["train"].features["label"]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = set(splits["train"]["label"])  # rows without a label were refused (or dropped) as loaded
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [str(v) for v in sorted(values)]
    if all(isinstance(v, str) for v in values):
        return sorted(values)
    kinds = sorted({type(v).__name__ for v in values})
    raise DataError(
        f"data.train: labels must be all integers or all strings (found {', '.join(kinds)}); "
        "fix the label column so every row uses the same kind"
    )


def check_labels(splits: "DatasetDict", names: list[str]) -> None:
    """Every validation/test label must be one of the training labels; warn on strong imbalance."""
    from datasets import ClassLabel

    known = set(names)
    for split in ("validation", "test"):
        if split not in splits or isinstance(splits[split].features["label"], ClassLabel):
            continue
        unknown = sorted({str(v) for v in splits[split]["label"]} - known, key=str)
        if unknown:
            raise DataError(
                f"data.{split}: label(s) {', '.join(map(repr, unknown[:10]))} never occur in data.train "
                f"(training labels: {', '.join(names)}); add training examples of them or drop those rows"
            )
    class_label = is_class_label(splits["train"])
    counts = Counter(label_key(v, names, class_label) for v in splits["train"]["label"])
    per_class = [counts[name] for name in names]
    if min(per_class) == 0 or max(per_class) >= IMBALANCE_RATIO * min(per_class):
        shown = ", ".join(f"{name}: {counts[name]}" for name in names)
        logger.warning(
            "WARNING: the training labels are strongly imbalanced (%s). Accuracy can look good while the "
            "small classes are never predicted: watch the macro F1, and consider rebalancing the data.",
            shown,
        )


def check_declared_labels(dataset: "Dataset", column: str, names: list[str], *, where: str) -> None:
    """Every label in `column` of a split as loaded (rows numbered from 1) is one of ``data.labels``."""
    from datasets import ClassLabel

    if column not in dataset.column_names:
        return  # select_roles names the missing column
    feature = dataset.features[column]
    values = [feature.names[v] if isinstance(feature, ClassLabel) and 0 <= v < len(feature.names) else v
              for v in dataset[column]]
    rows = [i for i, v in enumerate(values) if str(v) not in names]
    if rows:
        shown = ", ".join(f"row {i + 1} ({values[i]!r})" for i in rows[:5])
        raise DataError(
            f"{where}: {len(rows)} row(s) with a label outside data.labels [{', '.join(names)}]: {shown}"
            f"{' ...' if len(rows) > 5 else ''}; fix or drop those rows, or add the label to data.labels"
        )


def label_key(value: Any, names: list[str], class_label: bool) -> str:
    """A label value as its name: a ClassLabel column holds ids into `names`, other columns the labels."""
    if not class_label:
        return str(value)
    if not 0 <= value < len(names):  # GLUE test splits carry -1: no gold label
        raise DataError(
            f"label id {value} is not one of the {len(names)} classes ({', '.join(names)}); a split without gold labels "
            "(e.g. GLUE test, labels -1) cannot be used for training or evaluation: remove it from the recipe"
        )
    return names[value]


def is_class_label(dataset: "Dataset") -> bool:
    from datasets import ClassLabel

    return isinstance(dataset.features["label"], ClassLabel)

# --------------------------------------------------------------------------------------------
# Inference


def max_length_for(recipe_max_length: int | None, model) -> int:
    context = modeling.context_length(model.config) or DEFAULT_MAX_LENGTH
    length = recipe_max_length or min(DEFAULT_MAX_LENGTH, context)
    if length > context:
        raise DataError(f"data.max_length={length} is longer than the model's context ({context} tokens); lower it")
    return length


def classify(model, tokenizer, texts: list[str], pairs: list[str] | None = None, *, max_length: int | None = None, batch_size: int = 32) -> list[list[float]]:
    """Class probabilities for each text (pair), in label-id order."""
    import torch

    max_length = max_length_for(max_length, model)
    probabilities: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        batch_pairs = pairs[start : start + batch_size] if pairs is not None else None
        inputs = tokenizer(texts[start : start + batch_size], batch_pairs, truncation=True, max_length=max_length,
                           padding=True, return_tensors="pt").to(model.device)
        with torch.no_grad():
            logits = model(**inputs).logits
        probabilities += logits.float().softmax(-1).tolist()
    return probabilities


def reference_ids(config, dataset: "Dataset") -> list[int]:
    """The label ids of `dataset`'s labels in a trained model's label set (unknown labels are a DataError)."""
    label2id = config.label2id
    names = list(label2id)
    class_label = is_class_label(dataset)
    unlabelled = [i for i, value in enumerate(dataset["label"]) if value is None]
    if unlabelled:
        shown = ", ".join(str(i + 1) for i in unlabelled[:10]) + (" ..." if len(unlabelled) > 10 else "")
        raise DataError(f"--data: {len(unlabelled)} of {len(dataset)} rows have no label, rows {shown}; "
                        "give every row its gold label (hftk predict labels texts without one)")
    references = []
    for value in dataset["label"]:
        key = label_key(value, names, class_label)
        if key not in label2id:
            raise DataError(
                f"--data: label {value!r} is not one the model was trained on ({', '.join(names)}); "
                "drop those rows or map them to a known label"
            )
        references.append(label2id[key])
    return references

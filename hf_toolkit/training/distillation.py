"""Knowledge distillation for ``hftk finetune``: the recipe's ``distillation`` section, its teacher and its loss.

The loss is the standard one (Hinton et al. 2015; transformers' research ``distiller.py``)::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss

The KL term is summed over the classes (or vocabulary) and averaged over the positions that carry
a label only (:meth:`hf_toolkit.tasks.base.Task.distillation_logits` names them per task: every
example for classification, QA's start and end logits averaged, masked tokens for masked-LM, next
tokens with a label for causal-LM). T^2 keeps the soft term's gradients at the scale of the hard
term's as T changes. It is computed in fp32 with autocast off, so bf16 runs do not soften in bf16.

For token tasks whose model divides its loss by the Trainer's ``num_items_in_batch`` (GPT-2 LMs:
the label count of the whole step, all processes together), the KL sum is divided by that same
count and scaled as the Trainer scales the model's loss, so 2 processes x batch b train as 1
process x batch 2b (tests/test_distributed_training.py). Otherwise it is this batch's mean, as
the task loss is.

The teacher (:func:`load_teacher`) is loaded as every command loads a run (:mod:`hf_toolkit.core.rundir`;
a LoRA teacher too), in eval mode, with ``requires_grad`` off, on the student's device; it is an
attribute of the Trainer, not of the model, so it is never saved with the student. Evaluation
(``eval_loss``, perplexity) is the task's own loss: the soft term applies only while training.

:func:`problems` checks the section before any data or weights load: the task can be distilled,
the teacher exists and was trained for the same task, its label names and order equal the
student's (``data.labels``; otherwise :func:`check_labels` once the training labels are read, still
before any weights load), and its vocabulary equals the student's tokenizer's (the teacher reads
the student's token ids, so this holds for every task).
"""

from __future__ import annotations

from typing import Any

from hf_toolkit.core import modeling, rundir
from hf_toolkit.errors import HftkError, Problem, RecipeError
from hf_toolkit.recipe.schema import Recipe
from hf_toolkit.tasks import TASKS

LABEL_KEYS = ("labels", "start_positions", "end_positions")
TEACHER = ("distillation", "teacher")


def kd_loss(student_logits: Any, teacher_logits: Any, mask: Any, temperature: float, normalizer: Any = None) -> Any:
    """T^2 x sum over the masked positions of KL(softmax(teacher/T) || softmax(student/T)), divided by
    `normalizer` (default: the number of masked positions). In fp32, autocast off."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        student = student_logits.float()[mask] / temperature
        teacher = teacher_logits.float()[mask] / temperature
        teacher_log_p = F.log_softmax(teacher, dim=-1)
        kl = (teacher_log_p.exp() * (teacher_log_p - F.log_softmax(student, dim=-1))).sum()
        count = normalizer if normalizer is not None else mask.sum().clamp(min=1)
        return kl * temperature**2 / count


def combined_loss(task, student_outputs, teacher_outputs, inputs, hard_loss, *, temperature: float, alpha: float,
                  normalizer: Any = None) -> Any:
    """alpha x the soft loss (averaged over the task's logit pairs) + (1 - alpha) x `hard_loss`."""
    student_pairs = task.distillation_logits(student_outputs, inputs)
    teacher_pairs = task.distillation_logits(teacher_outputs, inputs)
    soft = sum(kd_loss(s, t, mask, temperature, normalizer) for (s, mask), (t, _) in zip(student_pairs, teacher_pairs))
    return alpha * soft / len(student_pairs) + (1 - alpha) * hard_loss


class DistillationLoss:
    """Mixed into the task's Trainer class (the module-level classes of
    :mod:`hf_toolkit.training.distillation_trainers`): the distillation loss while training.

    The teacher is an attribute of the Trainer, not of the model: the Trainer saves only the model.
    """

    def __init__(self, *args, teacher_model: Any, distilled_task: Any, distillation: Any, **kwargs) -> None:
        self.teacher_model = teacher_model
        self.distilled_task = distilled_task
        self.distillation = distillation  # the recipe's DistillationSection
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        if not model.training or self.distillation.alpha == 0:
            # evaluation reports the task's own loss; alpha 0 is the task's loss alone, so the
            # teacher's forward pass (a third or more of a step) would be thrown away
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        hard, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            teacher_outputs = self.teacher_model(**{k: v for k, v in inputs.items() if k not in LABEL_KEYS})
        normalizer = None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # the model divided its summed loss by the step's global label count and the Trainer
            # multiplies it by the process count (DDP then averages): the soft sum follows suit
            normalizer = num_items_in_batch
            if self.args.average_tokens_across_devices:
                normalizer = normalizer / self.accelerator.num_processes
        loss = combined_loss(self.distilled_task, outputs, teacher_outputs, inputs, hard,
                             temperature=self.distillation.temperature, alpha=self.distillation.alpha, normalizer=normalizer)
        return (loss, outputs) if return_outputs else loss


def load_teacher(recipe: Recipe, device: Any) -> Any:
    """The teacher model: eval mode, no gradients, on `device`."""
    model, _ = rundir.load_model(rundir.open_run(recipe.distillation.teacher))
    model.requires_grad_(False)
    return model.to(device).eval()


def describe(recipe: Recipe, teacher: Any | None = None) -> list[str]:
    """What a run (and ``--dry-run``) says about its distillation."""
    d = recipe.distillation
    size = f" ({modeling.parameter_counts(teacher)['total']:,} parameters)" if teacher is not None else ""
    return [f"distillation: teacher {d.teacher}{size}, frozen (eval mode, no gradients), on the student's device, not saved",
            f"loss = {d.alpha:g} x {d.temperature:g}^2 x KL(teacher || student at T={d.temperature:g}) on labelled positions "
            f"+ {1 - d.alpha:g} x the {recipe.task} loss"]


# --------------------------------------------------------------------------------------------
# Checks (before any data or weights load)


def problems(recipe: Recipe) -> list[Problem]:
    """Every problem of the recipe's ``distillation`` section (none without one)."""
    section = recipe.distillation
    if section is None:
        return []
    task = TASKS[recipe.task]
    if not task.distills:
        names = ", ".join(name for name, t in TASKS.items() if t.distills)
        return [Problem(("distillation",), f"task {recipe.task} cannot be distilled; distillation covers {names}")]
    try:
        run = rundir.open_run(section.teacher)
        config = rundir.load_config(run)
    except HftkError as error:
        return [Problem(TEACHER, str(error))]
    teacher_task = rundir.task_name(run, config)
    if teacher_task != recipe.task:
        return [Problem(TEACHER, f"'{section.teacher}' is a {teacher_task or 'model of another kind'} model "
                                 f"({', '.join(config.architectures or ['no architectures'])}); the student trains "
                                 f"{recipe.task}: the teacher must be trained for the same task")]
    found = []
    declared = getattr(recipe.data, "labels", None)
    if declared is not None:
        found += label_problems(config, [str(v) for v in declared], "data.labels")
    return found + vocabulary_problems(recipe, run)


def label_problems(teacher_config: Any, student_names: list[str], source: str) -> list[Problem]:
    """The teacher's label names, in id order, must be the student's."""
    teacher_names = [str(teacher_config.id2label[i]) for i in range(len(teacher_config.id2label))]
    if teacher_names == student_names:
        return []
    return [Problem(TEACHER, f"the teacher's labels are {teacher_names} (in id order), the student's {student_names} "
                             f"({source}); distillation compares the two label by label, so they must be the same names "
                             "in the same order: set data.labels to the teacher's list")]


def check_labels(recipe: Recipe, student_config: dict[str, Any]) -> None:
    """Once the training labels are read (no ``data.labels``), before any weights load."""
    if recipe.distillation is None or "id2label" not in student_config:
        return
    config = rundir.load_config(rundir.open_run(recipe.distillation.teacher))
    names = [str(student_config["id2label"][i]) for i in range(len(student_config["id2label"]))]
    found = label_problems(config, names, "the labels of data.train, sorted")
    if found:
        raise RecipeError(found)


def vocabulary_problems(recipe: Recipe, teacher_run: Any) -> list[Problem]:
    """The teacher reads the student's token ids: both tokenizers must map the same tokens to the same ids."""
    if recipe.model.train_tokenizer is not None:
        return [Problem(("model", "train_tokenizer"), "a distilled student reads its teacher's vocabulary: remove "
                        f"train_tokenizer and set model.tokenizer: {recipe.distillation.teacher}")]
    student = modeling.load_tokenizer(recipe.model).get_vocab()
    teacher = modeling.load_tokenizer_from(teacher_run.location).get_vocab()
    if student == teacher:
        return []
    differ = sorted(set(student.items()) ^ set(teacher.items()), key=lambda item: item[1])[:3]
    return [Problem(TEACHER, f"the teacher's vocabulary ({len(teacher):,} tokens) differs from the student's tokenizer's "
                             f"({len(student):,}; e.g. {', '.join(f'{t!r}={i}' for t, i in differ)}); the teacher reads "
                             "the student's token ids, so train the student with the teacher's tokenizer "
                             f"(model.tokenizer: {recipe.distillation.teacher})")]

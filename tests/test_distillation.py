"""Knowledge distillation (a recipe's ``distillation`` section): the loss equals a hand computation,
every check stops with one message and exit 2 before any weights load, and a distilled run trains,
names its teacher and saves the student alone. 2 processes = 1 process: tests/test_distributed_training.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import shared_path, write

TINY_BERT = ("{model_type: bert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
             "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}")


# --------------------------------------------------------------------------------------------
# The loss, by hand


def hand_kl(teacher: list[float], student: list[float], t: float) -> float:
    """KL(softmax(teacher/t) || softmax(student/t)) in plain floats."""
    def softmax(xs):
        exps = [math.exp(x / t) for x in xs]
        return [e / sum(exps) for e in exps]

    p, q = softmax(teacher), softmax(student)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kd_loss_equals_a_hand_computation_on_labelled_positions_only():
    import torch

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.training.distillation import combined_loss, kd_loss

    student = [[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [2.0, -1.0, 0.0]]]  # 1 row, 3 positions, 3 tokens
    teacher = [[[2.0, 1.0, 0.0], [5.0, 5.0, 5.0], [0.5, 0.5, 2.0]]]
    labels = torch.tensor([[1, -100, 2]])  # the middle position carries no label (masked-LM)
    t, alpha, hard = 2.0, 0.25, torch.tensor(1.5)
    expected_soft = t * t * (hand_kl(teacher[0][0], student[0][0], t) + hand_kl(teacher[0][2], student[0][2], t)) / 2

    s, te = torch.tensor(student), torch.tensor(teacher)
    assert float(kd_loss(s, te, labels != -100, t)) == pytest.approx(expected_soft, rel=1e-6)
    outputs = lambda logits: SimpleNamespace(logits=logits)  # noqa: E731
    loss = combined_loss(TASKS["masked-lm"], outputs(s), outputs(te), {"labels": labels}, hard, temperature=t, alpha=alpha)
    assert float(loss) == pytest.approx(alpha * expected_soft + (1 - alpha) * 1.5, rel=1e-6)
    # the ignored position's logits do not matter
    changed = te.clone()
    changed[0, 1] = torch.tensor([-9.0, 9.0, 0.0])
    assert float(kd_loss(s, changed, labels != -100, t)) == pytest.approx(expected_soft, rel=1e-6)
    # a normalizer (the Trainer's global label count) replaces the local count
    assert float(kd_loss(s, te, labels != -100, t, normalizer=4)) == pytest.approx(expected_soft * 2 / 4, rel=1e-6)


def test_causal_lm_compares_each_position_with_the_next_token_label_and_qa_averages_start_and_end():
    import torch

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.training.distillation import combined_loss

    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])
    te = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [9.0, -9.0]]])
    labels = torch.tensor([[-100, 1, -100]])  # only token 1 carries a label: predicted at position 0
    loss = combined_loss(TASKS["causal-lm"], SimpleNamespace(logits=s), SimpleNamespace(logits=te), {"labels": labels},
                         torch.tensor(0.0), temperature=1.0, alpha=1.0)
    assert float(loss) == pytest.approx(hand_kl([0.0, 1.0], [1.0, 0.0], 1.0), rel=1e-6)

    start_s, start_t = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    end_s, end_t = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 4.0]])
    qa = lambda a, b: SimpleNamespace(start_logits=a, end_logits=b)  # noqa: E731
    loss = combined_loss(TASKS["question-answering"], qa(start_s, end_s), qa(start_t, end_t), {}, torch.tensor(2.0),
                         temperature=3.0, alpha=0.5)
    soft = 9 * (hand_kl([0, 2, 0], [1, 0, 0], 3.0) + hand_kl([0, 0, 4], [0, 0, 1], 3.0)) / 2
    assert float(loss) == pytest.approx(0.5 * soft + 0.5 * 2.0, rel=1e-6)


class _TaskTrainer:
    """Stands in for a task's Trainer: its loss is 1.5."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        loss = torch.tensor(1.5)
        return (loss, SimpleNamespace(logits=torch.zeros(1, 2))) if return_outputs else loss


def _teacher_must_not_run(**inputs):
    raise AssertionError("the teacher ran")


def test_alpha_0_trains_on_the_task_loss_without_running_the_teacher():
    import torch

    from hf_toolkit.training.distillation import DistillationLoss

    class_ = type("Student", (DistillationLoss, _TaskTrainer), {})  # as distillation_trainers mixes it in
    model, inputs = torch.nn.Linear(1, 1).train(), {"input_ids": torch.ones(1, 2), "labels": torch.ones(1)}
    student = class_(teacher_model=_teacher_must_not_run, distilled_task=None,
                     distillation=SimpleNamespace(alpha=0.0, temperature=2.0))
    assert float(student.compute_loss(model, inputs)) == 1.5
    student.distillation = SimpleNamespace(alpha=0.5, temperature=2.0)
    with pytest.raises(AssertionError, match="the teacher ran"):  # any other alpha needs the teacher
        student.compute_loss(model, inputs)


def test_every_task_that_distils_has_a_module_level_distilling_trainer():
    from hf_toolkit.tasks import TASKS
    from hf_toolkit.training import distillation_trainers
    from hf_toolkit.training.distillation import DistillationLoss

    for task in (t for t in TASKS.values() if t.distills):
        base = task.trainer_class()
        trainer = distillation_trainers.trainer_class(base)
        assert issubclass(trainer, DistillationLoss) and issubclass(trainer, base), task.name
        assert trainer.__module__ == distillation_trainers.__name__ and "<locals>" not in trainer.__qualname__
    with pytest.raises(Exception, match="distillation has no Trainer for int"):
        distillation_trainers.trainer_class(int)


def test_the_soft_loss_is_fp32_under_bf16_autocast():
    import torch

    from hf_toolkit.training.distillation import kd_loss

    s = torch.randn(4, 50).bfloat16()
    te = torch.randn(4, 50).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = kd_loss(s, te, torch.ones(4, dtype=torch.bool), 2.0)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(kd_loss(s.float(), te.float(), torch.ones(4, dtype=torch.bool), 2.0)), rel=1e-6)


# --------------------------------------------------------------------------------------------
# A tiny teacher and student, through the CLI


def sentiment_rows(n: int) -> list[dict]:
    words = {"pos": ["good", "great", "lovely"], "neg": ["bad", "awful", "dull"]}
    return [{"text": f"the movie was {words[label][i % 3]}", "label": label}
            for i in range(n) for label in (("pos", "neg") if i % 2 else ("neg", "pos"))][:n]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny untrained BERT classifier with labels [neg, pos] and the bert-base-uncased tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    out = tmp_path_factory.mktemp("teacher")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def student_recipe(tmp_path: Path, teacher: Path, *, task: str = "text-classification", model: str | None = None,
                   data: str = ", max_length: 16", distillation: str | None = None, training: str = "") -> Path:
    train = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in sentiment_rows(16)))
    model = model or f"{{init: scratch, tokenizer: {shared_path('tokenizers', 'bert-base-uncased')}, config: {TINY_BERT}}}"
    distillation = distillation if distillation is not None else f"{{teacher: {teacher}, temperature: 2.0, alpha: 0.5}}"
    return write(tmp_path / "student.yaml", (
        f"task: {task}\nseed: 0\nprecision: fp32\nmodel: {model}\n"
        f"data: {{train: {train}{data}}}\n"
        f"distillation: {distillation}\n"
        f"training: {{output_dir: {tmp_path / 'run'}, max_steps: 3, per_device_train_batch_size: 4, "
        f"report_to: none, save_strategy: 'no', logging_steps: 1, disable_tqdm: true{training}}}\n"))


def first_losses(run: Path) -> list[float]:
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def test_distilled_student_trains_names_its_teacher_and_saves_itself_alone(teacher, cli, tmp_path):
    from safetensors import safe_open

    plan = cli("finetune", student_recipe(tmp_path / "plan", teacher), "--dry-run")
    assert plan.exit_code == 0, plan
    assert f"Distillation: teacher {teacher}" in plan.stdout and "frozen (eval mode, no gradients)" in plan.stdout
    assert "0.5 x 2^2 x KL(teacher || student at T=2) on labelled positions + 0.5 x the text-classification loss" in plan.stdout

    result = cli("finetune", student_recipe(tmp_path / "kd", teacher))
    assert result.exit_code == 0, result
    run = tmp_path / "kd" / "run"
    card = (run / "README.md").read_text()
    assert f"**Distilled from:** `{teacher}`" in card and "alpha 0.5, temperature 2" in card
    with safe_open(run / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert all(k.startswith(("bert.", "classifier.")) for k in keys) and len(keys) < 50, keys  # the student's only

    # alpha 0 is the task loss alone: the same losses as a run without distillation; alpha 0.5 differs
    assert cli("finetune", student_recipe(tmp_path / "a0", teacher, distillation=f"{{teacher: {teacher}, alpha: 0.0}}")).exit_code == 0
    plain = student_recipe(tmp_path / "plain", teacher)
    write(plain, "\n".join(line for line in plain.read_text().splitlines() if not line.startswith("distillation")) + "\n")
    assert cli("finetune", plain).exit_code == 0
    assert first_losses(tmp_path / "a0" / "run") == pytest.approx(first_losses(tmp_path / "plain" / "run"), abs=1e-6)
    assert first_losses(run)[0] != pytest.approx(first_losses(tmp_path / "plain" / "run")[0], abs=1e-3)


def test_lora_student_distils(teacher, cli, tmp_path):
    result = cli("finetune", student_recipe(tmp_path, teacher, model=f"{{name_or_path: {teacher}}}",
                                            distillation=f"{{teacher: {teacher}, alpha: 1.0}}"),
                 "--set", "peft={r: 4}")
    assert result.exit_code == 0, result
    assert (tmp_path / "run" / "adapter_config.json").is_file()
    assert len(first_losses(tmp_path / "run")) == 3


@pytest.mark.parametrize("case, message", [
    ("task", "distillation: task summarization cannot be distilled; distillation covers causal-lm, masked-lm, text-classification, question-answering"),
    ("missing", "distillation.teacher: cannot load model 'runs/no-such-teacher'"),
    ("other-task", "is a masked-lm model (BertForMaskedLM); the student trains text-classification"),
    ("labels", "the teacher's labels are ['neg', 'pos'] (in id order), the student's ['pos', 'neg'] (data.labels)"),
    ("data-labels", "the teacher's labels are ['neg', 'pos'] (in id order), the student's ['bad', 'good']"),
    ("vocabulary", "the teacher's vocabulary (30,522 tokens) differs from the student's tokenizer's (50,257"),
    ("train-tokenizer", "model.train_tokenizer: a distilled student reads its teacher's vocabulary"),
])
def test_every_check_exits_2_with_one_message_before_weights_load(case, message, teacher, cli, tmp_path, monkeypatch):
    from transformers import BertConfig, BertForMaskedLM

    from hf_toolkit.core import modeling, rundir

    kwargs = {}
    if case == "task":
        kwargs = dict(task="summarization", data=", columns: {source: text, target: label}")
    elif case == "missing":
        kwargs = dict(distillation="{teacher: runs/no-such-teacher}")
    elif case == "other-task":
        other = tmp_path / "mlm"
        BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)).save_pretrained(other)
        kwargs = dict(distillation=f"{{teacher: {other}}}")
    elif case == "labels":
        kwargs = dict(data=", labels: [pos, neg]")
    elif case == "vocabulary":
        kwargs = dict(model=f"{{init: scratch, tokenizer: {shared_path('tokenizers', 'gpt2')}, config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16}}}}")
    elif case == "train-tokenizer":
        kwargs = dict(model=f"{{init: scratch, train_tokenizer: {{vocab_size: 300}}, config: {TINY_BERT}}}")
    recipe = student_recipe(tmp_path, teacher, **kwargs)
    if case == "data-labels":
        rows = [{"text": "fine", "label": "good"}, {"text": "not fine", "label": "bad"}] * 4
        write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(rundir, "load_model", lambda *a, **k: pytest.fail("weights loaded before the checks"))
    monkeypatch.setattr(modeling, "load_model", lambda *a, **k: pytest.fail("weights loaded before the checks"))
    result = cli("finetune", recipe)
    assert result.exit_code == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr

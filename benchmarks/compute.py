"""Compute and memory rows of issue 13: model FLOPs utilisation (MFU) of a GPT-2-small training
step against this machine's measured matmul peak, peak memory of full fine-tuning vs LoRA vs
gradient checkpointing, and ``training.torch_compile`` vs eager.

Every training run here is ``hftk finetune`` (the Python API) in its own child process
(:func:`_child`), so that its peak RSS is its own and one run's allocations do not carry over into
the next. The child adds one Trainer callback to the Trainer hftk builds (a wrapper around
``hf_toolkit.training.train.build_trainer``; nothing else changes) that times every optimizer step,
resets the kernel's peak-RSS counter when training starts (``/proc/self/clear_refs``), reads the
peak when it ends, and can profile one step with ``torch.profiler``. It prints one JSON line.

Rows: :func:`mfu`, :func:`memory`, :func:`torch_compile`, independent of each other and of the
rows in :mod:`benchmarks.rows`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.rows import GPT2_TOKENIZER, REPO, STORIES, Row, needs

REPORT_MARK = "hftk-bench-report: "
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}


# --------------------------------------------------------------------------------------------
# Model sizes and the FLOPs formula


@dataclass(frozen=True)
class Size:
    """A GPT-2 from scratch (the real GPT-2 tokenizer, vocabulary 50,257) and one step's batch."""

    layers: int
    heads: int
    width: int
    block: int
    batch: int
    vocab: int = 50257

    @property
    def label(self) -> str:
        return f"GPT-2 {self.layers}x{self.width}, batch {self.batch} x {self.block} tokens"

    @property
    def tokens(self) -> int:
        return self.batch * self.block


GPT2_SMALL = Size(layers=12, heads=12, width=768, block=128, batch=8)
QUICK = Size(layers=4, heads=8, width=512, block=128, batch=4)


def matmul_parameters(layers: int, width: int, vocab: int) -> int:
    """Weights that take part in a matrix multiply per token: 12*d^2 per GPT-2 block (q, k, v and
    output projection 4*d^2, MLP 8*d^2) and the vocabulary projection V*d (tied to the token
    embedding, whose lookup costs no FLOPs). Position embeddings, biases and LayerNorm gains are
    left out (no matmul; under 0.1% of GPT-2 small's FLOPs)."""
    return 12 * layers * width * width + vocab * width


def model_flops_per_token(layers: int, width: int, vocab: int, seq: int) -> int:
    """Training FLOPs per token, PaLM appendix B: 6*N + 12*L*d*T, with N :func:`matmul_parameters`
    (2 FLOPs per weight forward, 4 backward) and 12*L*d*T the attention scores and the weighted sum
    (Q K^T and A V, 2*T*d each per layer forward, x3 with backward; the causal mask's skipped half
    counted, as PaLM does). Recomputation (gradient checkpointing) does not count: model FLOPs."""
    return 6 * matmul_parameters(layers, width, vocab) + 12 * layers * width * seq


def steady_step_seconds(times: list[float], warmup: int) -> float:
    """Median time of one optimizer step after the first `warmup` steps. ``times[0]`` is when
    training began and ``times[i]`` when step i ended; NaN marks a step not to time (profiled)."""
    durations = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :]) if a == a and b == b]
    if not durations:
        raise ValueError(f"no timed step after {warmup} warm-up steps in {len(times) - 1} steps")
    return statistics.median(durations)


def status_kib(text: str, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (e.g. VmHWM, VmRSS), in KiB; 0 when absent."""
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


# Profile categories: the first pattern an op's name matches (self CPU time of each op).
CATEGORIES = (
    ("matmul", r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|_addmm_activation)$|mkldnn.*(matmul|linear)"),
    ("attention (SDPA)", r"scaled_dot_product|flash_attention"),
    ("optimizer", r"_fused_adam|_foreach_|Optimizer\.step|adam"),
    ("loss (log-softmax, NLL over the vocabulary)", r"log_softmax|nll_loss|cross_entropy"),
    ("softmax", r"softmax"),
    ("layernorm", r"layer_norm"),
    ("GELU (tanh form, elementwise ops)", r"gelu|tanh|pow"),
    ("dropout", r"dropout|bernoulli"),
    ("dtype casts and copies", r"^aten::(_to_copy|to|copy_|clone|contiguous|_copy_from)$"),
    ("embedding", r"embedding"),
    ("elementwise (add, mul, ...)", r"^aten::(add|add_|mul|mul_|div|div_|sub|rsub|sum|fill_|zero_|zeros|where|masked_fill|ones_like|neg|sqrt|addcmul_|addcdiv_|lerp_|clamp|mean)$"),
)


def categorize(op_name: str) -> str:
    for category, pattern in CATEGORIES:
        if re.search(pattern, op_name):
            return category
    return "other"


# --------------------------------------------------------------------------------------------
# The child process: one hftk finetune, timed and measured


def _child() -> None:
    """``python -c 'from benchmarks.compute import _child; _child()' RECIPE OPTIONS_JSON``."""
    recipe_path, options = sys.argv[1], json.loads(sys.argv[2])
    import torch
    import transformers  # noqa: F401  (imported before the baseline RSS is read)
    from transformers import TrainerCallback

    if options.get("lora"):
        import peft  # noqa: F401
    from hf_toolkit.core import console
    from hf_toolkit.training import train

    console.setup(models=True)
    status = lambda: Path("/proc/self/status").read_text()  # noqa: E731
    report: dict = {"rss_after_imports_kib": status_kib(status(), "VmRSS"), "threads": torch.get_num_threads()}
    step_ends: list[float] = []
    cpu_ends: list[float] = []  # process CPU time (all threads) at the same moments
    hwm_per_step: list[int] = []
    profile_step = options.get("profile_step")

    class Probe(TrainerCallback):
        profiler = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            text = status()
            report["rss_train_begin_kib"] = status_kib(text, "VmRSS")
            report["rss_file_train_begin_kib"] = status_kib(text, "RssFile")
            report["bf16"], report["optim"] = bool(args.bf16), str(args.optim)
            report["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            report["parameters"] = sum(p.numel() for p in model.parameters())
            try:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
                report["peak_reset"] = True
            except OSError:
                report["peak_reset"] = False
            step_ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())

        def on_step_begin(self, args, state, control, **kwargs):
            if profile_step is not None and state.global_step + 1 == profile_step:
                report["peak_before_profile_kib"] = status_kib(status(), "VmHWM")
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                       record_shapes=bool(options.get("shapes")))
                self.profiler.__enter__()
                self.profile_start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.profiler is not None:
                report["profiled_step_seconds"] = time.perf_counter() - self.profile_start
                self.profiler.__exit__(None, None, None)
                report["profile"] = _summarize(self.profiler, bool(options.get("shapes")))
                self.profiler = None
                step_ends.append(float("nan"))  # the profiled step is not timed
                cpu_ends.append(float("nan"))
            else:
                step_ends.append(time.perf_counter())
                cpu_ends.append(time.process_time())
            hwm_per_step.append(status_kib(status(), "VmHWM"))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            text = status()
            report["peak_train_kib"] = status_kib(text, "VmHWM")
            report["rss_train_end_kib"], report["rss_file_train_end_kib"] = status_kib(text, "VmRSS"), status_kib(text, "RssFile")
            report["hwm_per_step_kib"] = hwm_per_step
            if options.get("lora"):  # did gradients reach the adapters (zero-initialised B) in every layer?
                b = [p for n, p in model.named_parameters() if "lora_B" in n]
                report["lora_b_nonzero"] = [int(sum(bool(p.abs().sum() > 0) for p in b)), len(b)]

    build = train.build_trainer

    def build_with_probe(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(Probe())
        return trainer

    train.build_trainer = build_with_probe
    started = time.perf_counter()
    result = train.finetune(recipe_path)
    report["wall_seconds"] = time.perf_counter() - started
    report["step_ends"], report["cpu_ends"] = step_ends, cpu_ends
    report["metrics"] = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    report["peak_process_kib"] = status_kib(status(), "VmHWM")
    if options.get("dry_run"):  # hftk's own estimate for the same recipe
        plan = train.finetune(recipe_path, [f"training.output_dir={result.output_dir}-dry"], dry_run=True)
        report["estimate"] = plan.memory
    print(REPORT_MARK + json.dumps(report), flush=True)


def _summarize(profiler, shapes: bool) -> dict:
    """Self CPU time per category (seconds) and, with shapes, the slowest matmul shapes."""
    events = profiler.key_averages(group_by_input_shape=shapes)
    by_category: dict[str, float] = {}
    ops: dict[str, float] = {}
    matmul_shapes: list[tuple[str, str, float, int]] = []
    for event in events:
        seconds = event.self_cpu_time_total / 1e6
        if seconds <= 0:
            continue
        category = categorize(event.key)
        by_category[category] = by_category.get(category, 0.0) + seconds
        ops[event.key] = ops.get(event.key, 0.0) + seconds
        if shapes and category == "matmul":
            matmul_shapes.append((event.key, str(event.input_shapes), seconds, event.count))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:25]
    out = {"categories": by_category, "top_ops": top}
    if shapes:
        out["matmul_shapes"] = sorted(matmul_shapes, key=lambda r: -r[2])[:30]
    return out


def run_child(recipe: str, work: Path, name: str, timeout: float = 900, env: dict | None = None, **options) -> dict:
    """Write `recipe` (its ``{out}`` filled in), train it in a child process (`env` added to its
    environment), return the child's report."""
    out = work / f"{name}-{time.monotonic_ns()}"
    path = work / f"{out.name}.yaml"
    path.write_text(recipe.replace("{out}", str(out)), encoding="utf-8")
    env = {**os.environ, **OFFLINE, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", "from benchmarks.compute import _child; _child()", str(path), json.dumps(options)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith(REPORT_MARK):
            return json.loads(line[len(REPORT_MARK) :])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"{name}: exit {done.returncode}: {tail}")


RECIPE = """\
task: causal-lm
seed: 0
precision: auto
model:
{model}
data: {{train: {stories}, block_size: {s.block}}}
training: {{output_dir: "{{out}}", max_steps: {steps}, per_device_train_batch_size: {s.batch}, learning_rate: 1e-4,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000, dataloader_drop_last: true{extra}}}
"""
SCRATCH = """\
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: {s.layers}, n_head: {s.heads}, n_embd: {s.width}, n_positions: {s.block}}}"""
LORA = "peft: {r: 8, alpha: 16, dropout: 0.0}\n"


def recipe(size: Size, steps: int, extra: str = "", *, model_dir: Path | None = None, peft: bool = False) -> str:
    """A causal-LM recipe on the bundled stories: `size` from scratch, or the saved model `model_dir`
    (LoRA needs saved weights); `extra` is appended to the training section."""
    model = (SCRATCH.format(tokenizer=GPT2_TOKENIZER, s=size) if model_dir is None
             else f"  name_or_path: {json.dumps(str(model_dir))}")
    text = RECIPE.format(model=model, stories=STORIES, s=size, steps=steps, extra=extra)
    return text + (LORA if peft else "")


SAVE_MODEL = """\
import sys, torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
layers, heads, width, block, out, tokenizer = sys.argv[1:]
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config(n_layer=int(layers), n_head=int(heads), n_embd=int(width), n_positions=int(block))).save_pretrained(out)
AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
"""


def saved_model(work: Path, size: Size, state: dict) -> Path:
    """A from-scratch (random) GPT-2 of `size` saved as a model directory, made once per run."""
    key = ("compute_saved_model", size)
    if key not in state:
        out = work / f"gpt2-{size.layers}x{size.width}"
        subprocess.run([sys.executable, "-c", SAVE_MODEL, str(size.layers), str(size.heads), str(size.width), str(size.block),
                        str(out), str(GPT2_TOKENIZER)], check=True, capture_output=True, env={**os.environ, **OFFLINE})
        state[key] = out
    return state[key]


# --------------------------------------------------------------------------------------------
# Matmul peak


def matmul_peak(dtype_name: str, shapes: list[tuple[int, int, int]], repeats: int = 3, seconds: float = 0.3) -> dict[tuple, float]:
    """Best FLOP/s of ``a @ b`` for each (m, k, n) at `dtype_name`, each timed for about `seconds`, best of `repeats`."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    rates: dict[tuple, float] = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # warm-up (first call picks and JITs the kernel)
        best = 0.0
        for _ in range(repeats):
            count, start = 0, time.perf_counter()
            while True:
                a @ b
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            best = max(best, 2 * m * k * n * count / elapsed)
        rates[(m, k, n)] = best
    return rates


def model_gemm_shapes(size: Size) -> list[tuple[int, int, int]]:
    """The forward GEMMs of a GPT-2 step (tokens x in -> out) and their two backward GEMMs each."""
    t, d, v = size.tokens, size.width, size.vocab
    shapes = []
    for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d), (d, v)):
        shapes += [(t, k, n), (t, n, k), (k, t, n)]  # forward, input gradient, weight gradient
    return shapes


def gemm_flops(size: Size) -> list[tuple[tuple[int, int, int], int]]:
    """(GEMM shape, its FLOPs in one step) for each GEMM of :func:`model_gemm_shapes` (shapes may
    repeat): the vocabulary projection's three GEMMs count once, the others once per layer."""
    shapes = model_gemm_shapes(size)
    return [((m, k, n), 2 * m * k * n * (1 if index >= len(shapes) - 3 else size.layers))
            for index, (m, k, n) in enumerate(shapes)]


def gemm_seconds(size: Size, rates: dict[tuple, float]) -> float:
    """Seconds of one step's GEMMs run back to back at their measured rates."""
    return sum(flops / rates[shape] for shape, flops in gemm_flops(size))


def gemm_mix_rate(size: Size, rates: dict[tuple, float]) -> float:
    """FLOP/s of one step's GEMMs run back to back at their measured rates (FLOP-weighted: total
    FLOPs over total time)."""
    return sum(flops for _, flops in gemm_flops(size)) / gemm_seconds(size, rates)


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _gflops(rate: float) -> str:
    return f"{rate / 1e9:,.0f} GFLOP/s"


def _share(profile: dict, top: int) -> str:
    """'matmul 41%, casts 12%, ...': the largest categories of a profiled step's self CPU time."""
    categories = profile["categories"]
    total = sum(categories.values())
    parts = sorted(categories.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name.split(' (')[0]} {100 * seconds / total:.0f}%" for name, seconds in parts)


# --------------------------------------------------------------------------------------------
# Row 1: model FLOPs utilisation


def mfu(work: Path, quick: bool, state: dict) -> Row:
    """Achieved model FLOP/s of `hftk finetune` (steady-state steps, precision: auto) over the best
    matmul FLOP/s measured in this process at the same dtype and thread count, before and after the run."""
    size, steps, warmup = (QUICK, 5, 2) if quick else (GPT2_SMALL, 8, 2)
    name = "model FLOPs utilisation of a GPT-2-small training step vs this machine's measured matmul peak"
    if (reason := needs(GPT2_TOKENIZER)) is not None:
        return Row(name, skipped=reason)
    import torch

    from hf_toolkit.training.arguments import resolve_precision

    if torch.cuda.is_available():
        return Row(name, skipped="a CUDA GPU is present: this row measures the CPU (hftk trains on the GPU there)")
    dtype = resolve_precision("auto")
    squares = [(n, n, n) for n in ((1024, 2048) if quick else (1024, 2048, 4096))]
    load = _load()
    rates = matmul_peak(dtype, squares + model_gemm_shapes(size), repeats=2, seconds=0.1 if quick else 0.2)
    try:
        report = run_child(recipe(size, steps), work, "mfu", profile_step=steps)
    except RuntimeError as error:
        return Row(name, skipped=f"failed: the training run: {error}")
    if not quick:  # the peak again, after the run: the best of both
        rates = {shape: max(rate, after) for (shape, rate), after in zip(rates.items(), matmul_peak(dtype, list(rates), repeats=2, seconds=0.15).values())}
    peak, mix = max(rates[s] for s in squares), gemm_mix_rate(size, rates)
    step = steady_step_seconds(report["step_ends"], warmup)
    flops = model_flops_per_token(size.layers, size.width, size.vocab, size.block) * size.tokens
    achieved = flops / step
    precision = "bf16 autocast" if report["bf16"] else "fp32"
    note = (f"{'quick: ' if quick else ''}{size.label} from scratch, {precision} (precision: auto), {report['threads']} threads; "
            f"FLOPs/step = tokens x (6N + 12LdT), N = 12Ld^2 + Vd = {matmul_parameters(size.layers, size.width, size.vocab) / 1e6:.1f}M "
            f"(PaLM app. B): {flops / 1e12:.2f} TFLOP; steady step {step:.2f} s (median of steps {warmup + 1}-{steps - 1}); "
            f"peak: best {dtype} square matmul (1024-{squares[-1][0]}); the model's own GEMM shapes run at {_gflops(mix)}, "
            f"{achieved / mix:.0%} of that; profiled step: {_share(report['profile'], 6)}")
    floor = step_floor_seconds(size, rates)
    note += (f"; ceiling: {' + '.join(f'{name} {seconds:.2f} s' for name, seconds in floor.items())}, each measured alone, "
             f"already take {sum(floor.values()):.2f} s a step, so no step here can pass {flops / sum(floor.values()) / peak:.0%} MFU")
    if report["bf16"] and not quick:
        note += "; " + fp32_contrast(size, steps, warmup, squares, flops, step, peak, work)
    note += f"; {load}"
    return Row(name, f"{achieved / peak:.1%} MFU ({_gflops(achieved)})", f"{_gflops(peak)} peak {dtype} matmul",
               achieved / peak, ">= 0.5", note)


def step_floor_seconds(size: Size, rates: dict[tuple, float]) -> dict[str, float]:
    """Seconds of the parts no GPT-2 step can skip, each measured alone in this process: its GEMMs at
    the rates measured for their shapes, one fused AdamW step over its fp32 parameters, and the loss
    (bf16 logits cast to fp32, cross entropy forward and backward, as transformers computes it),
    with freed memory kept as hftk keeps it while training (no page faults: ``python -m benchmarks``
    runs with hftk's allocator setting, :func:`benchmarks.rows.keep_freed_memory`)."""
    import torch

    def best(step, repeats: int = 5) -> float:
        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return min(times)

    d = size.width
    per_layer = [(d, 3 * d), (3 * d,), (d, d), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,), (d,), (d,), (d,), (d,)]
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(size.vocab, d), (size.block, d), *per_layer * size.layers, (d,), (d,)]]
    for param in params:
        param.grad = torch.full_like(param, 1e-3)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    logits = torch.randn(size.tokens, size.vocab, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, size.vocab, (size.tokens,))

    def loss() -> None:
        logits.grad = None
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()

    return {"GEMMs": gemm_seconds(size, rates), "fused AdamW": best(optimizer.step), "loss": best(loss)}


def fp32_contrast(size: Size, steps: int, warmup: int, squares: list, flops: float, bf16_step: float, bf16_peak: float,
                  work: Path) -> str:
    """The same step in fp32 as a share of the fp32 matmul peak: where matmuls dominate the step (fp32),
    MFU is high; native bf16 (AMX) speeds the matmuls up several times but not the memory-bound rest."""
    try:
        report = run_child(recipe(size, steps).replace("precision: auto", "precision: fp32"), work, "mfu-fp32")
    except RuntimeError as error:
        return f"the fp32 contrast run failed: {error}"
    peak = max(matmul_peak("fp32", squares, repeats=2, seconds=0.2).values())
    step = steady_step_seconds(report["step_ends"], warmup)
    return (f"the same step in fp32: {step:.2f} s, {_gflops(flops / step)} = {flops / step / peak:.0%} of the fp32 matmul peak "
            f"({_gflops(peak)}); the bf16 step is {step / bf16_step:.2f}x faster at a lower MFU because bf16 matmuls peak "
            f"{bf16_peak / peak:.1f}x higher and the memory-bound rest of the step does not speed up")


# --------------------------------------------------------------------------------------------
# Row 2: peak memory


def _gb(kib: float) -> str:
    return f"{kib / 1024**2:.2f} GB"


def memory(work: Path, quick: bool, state: dict) -> list[Row]:
    size, steps = (QUICK, 3) if quick else (GPT2_SMALL, 4)
    names = {"lora": "peak memory: LoRA vs full fine-tuning", "gc": "peak memory: gradient checkpointing vs full fine-tuning",
             "lora+gc": "peak memory: LoRA + gradient checkpointing vs full fine-tuning"}
    if (reason := needs(GPT2_TOKENIZER)) is not None:
        return [Row(n, skipped=reason) for n in names.values()]
    if not Path("/proc/self/status").exists():
        return [Row(n, skipped="needs /proc/self/status (Linux) for peak RSS") for n in names.values()]
    load = _load()
    gc = ", gradient_checkpointing: true"
    model = saved_model(work, size, state)  # LoRA adapts saved weights: every side starts from the same ones
    reports = {}
    for key, extra, peft in (("full", "", False), ("lora", "", True), ("gc", gc, False), ("lora+gc", gc, True)):
        try:
            reports[key] = run_child(recipe(size, steps, extra, model_dir=model, peft=peft), work, f"mem-{key}", dry_run=True, lora=peft)
        except RuntimeError as error:
            return [Row(n, skipped=f"failed: the {key} run: {error}") for n in names.values()]

    def above_imports(r: dict) -> float:
        return r["peak_train_kib"] - r["rss_after_imports_kib"]

    def vs_estimate(key: str) -> str:
        r = reports[key]
        return (f"{key}: {_gb(above_imports(r))} measured above the imports vs {_gb(r['estimate']['total'] / 1024)} "
                f"hftk estimate ({above_imports(r) * 1024 / r['estimate']['total']:.2f}x)")

    base = reports["full"]
    common = (f"{'quick: ' if quick else ''}{size.label}, {'bf16 autocast' if base['bf16'] else 'fp32'}, {steps} steps each in "
              f"its own process; peak RSS during training (VmHWM reset at train start); imports alone: "
              f"{_gb(base['rss_after_imports_kib'])}")
    rows = []
    for key, row_name in names.items():
        r = reports[key]
        extra = ""
        if "lora_b_nonzero" in r:
            moved, total = r["lora_b_nonzero"]
            extra = f"; {moved}/{total} LoRA B matrices trained (nonzero)"
        rows.append(Row(f"{row_name} (GPT-2 {size.layers}x{size.width})", f"{key}: {_gb(r['peak_train_kib'])} peak RSS",
                        f"full: {_gb(base['peak_train_kib'])} peak RSS", base["peak_train_kib"] / r["peak_train_kib"], "",
                        f"{common}; {vs_estimate(key)}, {vs_estimate('full')}{extra}; {load}"))
    return rows


# --------------------------------------------------------------------------------------------
# Row 3: torch.compile vs eager


def torch_compile(work: Path, quick: bool, state: dict) -> Row:
    """Steady-state tokens/s of the same recipe with ``training.torch_compile: true`` and without; the
    compiled run twice on one fresh inductor cache: cold (what a first run pays) and warm (a rerun)."""
    size, steps, warmup = (Size(layers=2, heads=4, width=256, block=128, batch=8), 8, 3) if quick else (GPT2_SMALL, 9, 3)
    name = "training.torch_compile: true vs eager on CPU"
    if (reason := needs(GPT2_TOKENIZER)) is not None:
        return Row(name, skipped=reason)
    load = _load()
    try:
        eager = run_child(recipe(size, steps), work, "eager")
    except RuntimeError as error:
        return Row(name, skipped=f"failed: the eager run: {error}")
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-cache-{time.monotonic_ns()}")}
    try:
        compiled = {"cold": run_child(recipe(size, steps, extra=", torch_compile: true"), work, "compiled", env=cache)}
        if not quick:
            compiled["warm"] = run_child(recipe(size, steps, extra=", torch_compile: true"), work, "compiled", env=cache)
    except RuntimeError as error:
        return Row(name, skipped=f"torch.compile failed here: {error}")
    eager_step = steady_step_seconds(eager["step_ends"], warmup)
    compiled_step = statistics.median([steady_step_seconds(r["step_ends"], warmup) for r in compiled.values()])
    ratio = eager_step / compiled_step
    winner = "compile wins" if ratio > 1.02 else "eager wins" if ratio < 0.98 else "a tie (within 2%)"
    first_eager = eager["step_ends"][1] - eager["step_ends"][0]
    costs = []
    for key, r in compiled.items():
        first = r["step_ends"][1] - r["step_ends"][0]
        costs.append(f"{first - first_eager:.0f} s on a {key} inductor cache (first step {first:.1f} s vs {first_eager:.1f} s eager), "
                     f"repaid after {_payback(first - first_eager, eager_step, compiled_step)}")
    note = (f"{'quick: ' if quick else ''}{size.label}, {'bf16 autocast' if eager['bf16'] else 'fp32'}; steady state: median "
            f"of steps {warmup + 1}-{steps}{' (compiled: median of the cold and the warm run)' if len(compiled) > 1 else ''}; "
            f"{winner} in steady state; compiling costs {'; '.join(costs)}; {load}")
    return Row(name, f"compiled: {size.tokens / compiled_step:,.0f} tokens/s", f"eager: {size.tokens / eager_step:,.0f} tokens/s",
               ratio, "", note)


def _payback(compile_seconds: float, eager_step: float, compiled_step: float) -> str:
    saved = eager_step - compiled_step
    if saved <= 0:
        return "never (no per-step saving)"
    return f"{max(compile_seconds, 0) / saved:,.0f} steps"

"""``hftk prune``: structured pruning of a trained model into a smaller plain transformers directory.

Two cuts, both of which shrink the weight matrices (so the model is smaller and faster with
ordinary dense kernels, unlike masking weights to zero):

- ``keep_layers``: keep these transformer layers, in order, and drop the rest
  (``num_hidden_layers`` / ``n_layer`` follow). A student initialised so, from every other
  teacher layer, is how DistilBERT was built (transformers' ``extract_distilbert.py``).
- ``ffn_keep``: keep this share of each feed-forward layer's hidden neurons (``intermediate_size``
  / ``n_inner`` follow; the same count in every layer, so the config stays standard). Which ones:
  the neurons with the largest **importance score**, ``||w_in[j]||_2 * ||w_out[:, j]||_2``: the
  L2 norm of the weights that write neuron j times the L2 norm of the weights that read it. A
  neuron the next layer barely reads, or one that is barely excited, adds little to the output
  (a weight-magnitude score: it needs no data; Michel et al. 2019 and Sanh et al. 2020 compare it
  with gradient scores). Kept neurons keep their order.

Supported: BERT-family encoders (``bert``, ``roberta``, ``xlm-roberta``, ``electra``,
``camembert``: ``encoder.layer[i].intermediate.dense`` / ``output.dense``) and GPT-2
(``h[i].mlp.c_fc`` / ``c_proj``), with any task head. The output is what ``hftk finetune`` would
write: weights (safetensors), config, tokenizer, the run's recipe (so predict/eval know the
task and columns) and a model card that says what was cut; not the run's metrics, which were
measured on the unpruned model. Everything a user can get wrong is checked before the weights load.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_toolkit.core import modeling, rundir
from hf_toolkit.errors import HftkError

ENCODERS = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
DECODERS = ("gpt2",)


@dataclass
class PruneReport:
    output_dir: Path
    params_before: int
    params_after: int
    size_before_mb: float
    size_after_mb: float
    layers_before: int
    layers_after: int
    ffn_before: int
    ffn_after: int


def parse_layers(text: str) -> list[int]:
    """'0,2,4' -> [0, 2, 4]; a user error names what is wrong."""
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HftkError(f"--keep-layers: '{text}' is not a comma-separated list of layer numbers, e.g. 0,2,4") from None
    if not layers:
        raise HftkError("--keep-layers: give at least one layer number, e.g. 0,2,4")
    return layers


def prune(run_dir: Path, output_dir: Path, *, keep_layers: list[int] | None, ffn_keep: float | None) -> PruneReport:
    """Write the pruned model of `run_dir` into `output_dir`; checks first, then loads and cuts."""
    if keep_layers is None and ffn_keep is None:
        raise HftkError("nothing to prune: give --keep-layers 0,2,4 and/or --ffn-keep 0.5")
    if not Path(run_dir).is_dir():
        raise HftkError(f"run directory not found: {run_dir}")
    if Path(output_dir).exists() and any(Path(output_dir).iterdir()):
        raise HftkError(f"output directory {output_dir} is not empty; choose a new one")
    run = rundir.open_run(str(run_dir))
    if run.adapter_base is not None:
        raise HftkError(f"{run_dir} holds a LoRA adapter: fold it into the weights first "
                        f"(hftk export {run_dir} MERGED --merge), then prune MERGED")
    config = rundir.load_config(run)
    layers_before = check_plan(config, keep_layers, ffn_keep)

    model, tokenizer = rundir.load_model(run, config)
    model.to("cpu")
    params_before = modeling.parameter_counts(model)["total"]
    ffn_before = ffn_width(model)
    if keep_layers is not None:
        drop_layers(model, keep_layers)
    if ffn_keep is not None:
        shrink_ffn(model, ffn_keep)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if run.path(rundir.RECIPE_FILE).is_file():
        shutil.copy(run.path(rundir.RECIPE_FILE), output_dir / rundir.RECIPE_FILE)
    report = PruneReport(
        output_dir, params_before, modeling.parameter_counts(model)["total"],
        weights_mb(Path(run.location)), weights_mb(output_dir),
        layers_before, len(layer_list(model)), ffn_before, ffn_width(model),
    )
    rundir.write_atomically(output_dir / rundir.MODEL_CARD, card(run, report, keep_layers, ffn_keep))
    return report


def check_plan(config: Any, keep_layers: list[int] | None, ffn_keep: float | None) -> int:
    """Before the weights load: the architecture is supported and the cut fits it; returns the layer count."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ENCODERS + DECODERS:
        raise HftkError(f"hftk prune cuts BERT-family encoders ({', '.join(ENCODERS)}) and GPT-2; "
                        f"this model is '{model_type}'")
    count = modeling.config_dims(config).layers
    if keep_layers is not None:
        wrong = [i for i in keep_layers if not 0 <= i < count]
        if wrong:
            raise HftkError(f"--keep-layers: the model has layers 0..{count - 1}; {wrong} do not exist")
        if len(set(keep_layers)) != len(keep_layers) or keep_layers != sorted(keep_layers):
            raise HftkError(f"--keep-layers: give each layer once, in increasing order (got {keep_layers})")
    if ffn_keep is not None and not 0 < ffn_keep <= 1:
        raise HftkError(f"--ffn-keep: a share of neurons in (0, 1], e.g. 0.5 (got {ffn_keep})")
    return count


def layer_list(model: Any) -> Any:
    """The model's ModuleList of transformer layers."""
    base = model.base_model
    return base.h if base.config.model_type in DECODERS else base.encoder.layer


def drop_layers(model: Any, keep: list[int]) -> None:
    """Keep the layers `keep`, in order; the config's layer count and each kept layer's index follow."""
    import torch

    base = model.base_model
    kept = torch.nn.ModuleList([layer_list(model)[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # the KV-cache slot a layer writes
                module.layer_idx = new_index
    if base.config.model_type in DECODERS:
        base.h = kept
    else:
        base.encoder.layer = kept
    model.config.num_hidden_layers = len(keep)  # GPT-2's n_layer, through its config's attribute_map
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = [model.config.layer_types[i] for i in keep]


def ffn_pair(layer: Any, model_type: str) -> tuple[Any, Any]:
    """(layer that writes the FFN neurons, layer that reads them) of one transformer layer."""
    if model_type in DECODERS:
        return layer.mlp.c_fc, layer.mlp.c_proj
    return layer.intermediate.dense, layer.output.dense


def ffn_width(model: Any) -> int:
    first = layer_list(model)[0]
    return _neurons(ffn_pair(first, model.config.model_type)[0], model.config.model_type)


def _neurons(writer: Any, model_type: str) -> int:
    # GPT-2's Conv1D stores weights as (in, out); nn.Linear as (out, in).
    return writer.weight.shape[1] if model_type in DECODERS else writer.weight.shape[0]


def importance(writer: Any, reader: Any, model_type: str) -> Any:
    """Per neuron j: ||weights into j||_2 * ||weights out of j||_2 (see the module docstring)."""
    if model_type in DECODERS:  # Conv1D: c_fc (hidden, n) and c_proj (n, hidden)
        return writer.weight.norm(dim=0) * reader.weight.norm(dim=1)
    return writer.weight.norm(dim=1) * reader.weight.norm(dim=0)  # Linear: (n, hidden) and (hidden, n)


def shrink_ffn(model: Any, share: float) -> None:
    """Keep round(share * width) neurons of every feed-forward layer, the most important ones."""
    import torch

    model_type = model.config.model_type
    width = ffn_width(model)
    count = max(1, round(share * width))
    with torch.no_grad():
        for layer in layer_list(model):
            writer, reader = ffn_pair(layer, model_type)
            keep = importance(writer, reader, model_type).topk(count).indices.sort().values
            if model_type in DECODERS:
                writer.weight = torch.nn.Parameter(writer.weight[:, keep].clone())
                writer.bias = torch.nn.Parameter(writer.bias[keep].clone())
                writer.nf = count
                reader.weight = torch.nn.Parameter(reader.weight[keep, :].clone())
                reader.nx = count
            else:
                writer.weight = torch.nn.Parameter(writer.weight[keep, :].clone())
                writer.bias = torch.nn.Parameter(writer.bias[keep].clone())
                writer.out_features = count
                reader.weight = torch.nn.Parameter(reader.weight[:, keep].clone())
                reader.in_features = count
    if model_type in DECODERS:
        model.config.n_inner = count
    else:
        model.config.intermediate_size = count


def weights_mb(directory: Path) -> float:
    """Size of the weight files in `directory` (safetensors, pickle weights, ONNX graphs and their data), in MB."""
    files = [*directory.glob("*.safetensors"), *directory.glob("pytorch_model*.bin"), *directory.glob("*.onnx"),
             *directory.glob("*.onnx.data")]
    return sum(f.stat().st_size for f in files) / 1e6


def card(run: Any, report: PruneReport, keep_layers: list[int] | None, ffn_keep: float | None) -> str:
    """The pruned model's README.md: what it was cut from and how; the source's card follows."""
    cuts = []
    if keep_layers is not None:
        cuts.append(f"- layers kept: {keep_layers} of {report.layers_before}")
    if ffn_keep is not None:
        cuts.append(f"- feed-forward neurons kept per layer: {report.ffn_after} of {report.ffn_before} "
                    f"(--ffn-keep {ffn_keep}; score ||w_in|| * ||w_out|| per neuron)")
    source_card = run.path(rundir.MODEL_CARD)
    before = source_card.read_text(encoding="utf-8") if source_card.is_file() else ""
    return (
        f"# Pruned from {run.reference}\n\nWritten by `hftk prune` (structured: smaller weight matrices, a standard "
        f"config). Not trained since: fine-tune or distil it before use.\n\n" + "\n".join(cuts) + "\n"
        f"- parameters: {report.params_before:,} -> {report.params_after:,}\n"
        f"- weights on disk: {report.size_before_mb:.1f} MB -> {report.size_after_mb:.1f} MB\n\n"
        + (f"## The model it was pruned from\n\n{before}" if before else "")
    )

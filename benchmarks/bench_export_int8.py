"""int8 export of a trained classifier: size, CPU latency and accuracy against fp32.

Runs `hftk export RUN OUT --format onnx --quantize int8` (which prints sizes, parity and latencies),
then classifies a JSONL file of {text, label} rows with the fp32 run and with the int8 ONNX graph
(onnxruntime) and reports both
accuracies and how often the two agree.

    hftk finetune recipes/sentiment-minilm.yaml
    python benchmarks/bench_export_int8.py runs/sentiment-minilm ../shared/data/sst2/dev_slice_500.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="text-classification run directory")
    parser.add_argument("data", type=Path, help="JSONL with text and label fields")
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_toolkit.core.onnx_model import OnnxModel

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8"
        export = subprocess.run([sys.executable, "-m", "hf_toolkit", "export", str(args.run), str(out), "--format", "onnx",
                                 "--quantize", "int8"],
                                capture_output=True, text=True, check=True)
        print(export.stdout.strip())
        fp32 = AutoModelForSequenceClassification.from_pretrained(args.run).eval()
        int8 = OnnxModel(out, fp32.config)
        tokenizer = AutoTokenizer.from_pretrained(args.run)
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    label2id = fp32.config.label2id
    gold = torch.tensor([label2id.get(str(r["label"]), r["label"]) for r in rows])
    predictions = {"fp32": [], "int8": []}
    for start in range(0, len(rows), 50):
        batch = tokenizer([r["text"] for r in rows[start : start + 50]], return_tensors="pt", padding=True,
                          truncation=True, max_length=args.max_length)
        with torch.no_grad():
            predictions["fp32"] += fp32(**batch).logits.argmax(-1).tolist()
            predictions["int8"] += int8(**batch).logits.argmax(-1).tolist()
    for name, labels in predictions.items():
        print(f"  accuracy_{name}: {float((torch.tensor(labels) == gold).float().mean()):.4f}")
    agreement = sum(a == b for a, b in zip(predictions["fp32"], predictions["int8"])) / len(rows)
    print(f"  agreement: {agreement:.4f} ({len(rows)} rows)")


if __name__ == "__main__":
    main()

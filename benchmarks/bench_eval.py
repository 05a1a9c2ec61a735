"""Benchmark: wall time of `hftk eval` against calling sacreBLEU / rouge-score directly.

Both sides run as fresh subprocesses, so both pay interpreter start-up and imports, on the
3,000 newstest2013 pairs from ../shared/data:

- BLEU + chrF: German references, a deterministic degraded system (every 5th word dropped);
- ROUGE: the English side, the same degradation (3,000 pairs).

Median of ``--runs`` runs each, alternating the two commands. The direct baseline reads the
files the same way and prints the same JSON; the script checks both outputs agree to 1e-9.
Target: hftk <= 1.2x the direct call.

    python benchmarks/bench_eval.py [--runs 5] [--write]   # --write updates BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "wmt_en_de_newstest2013_dev"
SECTION = "## hftk eval overhead"

READ = ("def lines(p):\n"
        "    with open(p, encoding='utf-8') as f:\n"
        "        return [l.rstrip('\\n') for l in f]\n"
        "h, r = lines(sys.argv[1]), lines(sys.argv[2])\n")
DIRECT_SACREBLEU = ("import json, sys\nfrom sacrebleu.metrics import BLEU, CHRF\n" + READ +
                    "print(json.dumps({'bleu': BLEU().corpus_score(h, [r]).score,"
                    " 'chrf': CHRF().corpus_score(h, [r]).score}))\n")
DIRECT_ROUGE = ("import json, sys\nfrom rouge_score import rouge_scorer\n" + READ +
                "keys = ['rouge1', 'rouge2', 'rougeL', 'rougeLsum']\n"
                "s = rouge_scorer.RougeScorer(keys)\n"
                "scores = [s.score(ref, hyp) for hyp, ref in zip(h, r)]\n"
                "print(json.dumps({k: sum(x[k].fmeasure for x in scores) / len(scores) for k in keys}))\n")


def degrade(lines: list[str]) -> list[str]:
    return [" ".join(w for j, w in enumerate(line.split()) if (i + j) % 5) for i, line in enumerate(lines)]


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def timed(command: list[str], env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, json.loads(done.stdout)


def bench(name: str, hftk_cmd: list[str], direct_cmd: list[str], runs: int, env: dict) -> dict:
    times: dict[str, list[float]] = {"hftk": [], "direct": []}
    outputs = {}
    for _ in range(runs):
        for side, command in (("hftk", hftk_cmd), ("direct", direct_cmd)):
            seconds, outputs[side] = timed(command, env)
            times[side].append(seconds)
    for key, value in outputs["direct"].items():
        assert abs(outputs["hftk"][key] - value) < 1e-9, (name, key, outputs)
    hftk, direct = statistics.median(times["hftk"]), statistics.median(times["direct"])
    return {"name": name, "hftk": hftk, "direct": direct, "ratio": hftk / direct,
            "scores": outputs["hftk"], "all": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update the section in BENCHMARKS.md")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"needs {DATA} (the shared data beside the repo)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    hftk = str(Path(sys.executable).with_name("hftk"))
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for lang in ("de", "en"):
            files[lang] = Path(tmp) / f"hyp.{lang}"
            files[lang].write_text("".join(f"{x}\n" for x in degrade(read_lines(DATA / f"newstest2013.{lang}"))),
                                   encoding="utf-8")
        de_ref, en_ref = str(DATA / "newstest2013.de"), str(DATA / "newstest2013.en")
        cases = [
            ("BLEU + chrF (sacreBLEU), 3,000 pairs",
             [hftk, "eval", "-m", "bleu", "-m", "chrf", "--predictions", str(files["de"]),
              "--references", de_ref, "--json"],
             [sys.executable, "-c", DIRECT_SACREBLEU, str(files["de"]), de_ref]),
            ("ROUGE 1/2/L/Lsum (rouge-score), 3,000 pairs",
             [hftk, "eval", "-m", "rouge", "--predictions", str(files["en"]),
              "--references", en_ref, "--json"],
             [sys.executable, "-c", DIRECT_ROUGE, str(files["en"]), en_ref]),
        ]
        results = [bench(name, a, b, args.runs, env) for name, a, b in cases]
    report = render(results, args.runs)
    print(report)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", report)


def render(results: list[dict], runs: int) -> str:
    rows = "\n".join(f"| {r['name']} | {r['hftk']:.2f} s | {r['direct']:.2f} s | {r['ratio']:.2f}x |"
                     for r in results)
    return f"""{SECTION}

`hftk eval` (a fresh `hftk` process: start-up, imports, file reading, scoring, JSON output)
against the same metric computed by calling sacreBLEU / rouge-score directly in a fresh
`python -c` process (its imports and file reading included). Median of {runs} runs each,
alternating; both outputs agree to 1e-9. Target: hftk <= 1.2x.

Command: `python benchmarks/bench_eval.py --runs {runs} --write`
(data: `../shared/data/wmt_en_de_newstest2013_dev`, 3,000 pairs; system = references with every
5th word dropped; BLEU/chrF on German, ROUGE on English).
Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores
(shared with other work, so absolute times vary; the ratio is the figure of merit).

| metric | hftk eval | direct call | ratio |
|---|---|---|---|
{rows}
"""


def write_section(path: Path, report: str) -> None:
    """Replace our section in BENCHMARKS.md (other sections belong to other benchmarks)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        start = text.index(SECTION)
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start] + report.rstrip() + "\n" + (text[following:] if following != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + report
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

"""The bar recipes/zh-sentiment-offline.yaml must clear: character n-gram TF-IDF + logistic regression.

Trained on the same ChnSentiCorp rows the recipe trains on and scored on the same held-out rows:
the recipe's own splits, loaded by hftk (``data.validation_split: 0.1`` carved from the shared
training file with the recipe's seed), plus the shared validation file (776 rows, never used by
the recipe either). Character 1-3-grams (sublinear tf, min_df 2), scikit-learn's
LogisticRegression (C=10, liblinear); takes seconds on one core.

    python benchmarks/zh_sentiment_baseline.py [--recipe recipes/zh-sentiment-offline.yaml]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/zh-sentiment-offline.yaml")
    parser.add_argument("--validation-file", default="../shared/data/chinese/chnsenticorp_htl/validation.csv",
                        help="the shared validation file (never trained on by the recipe either)")
    args = parser.parse_args()

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from hf_toolkit.core.data import load_source, load_splits
    from hf_toolkit.recipe.checks import read_yaml, validate_recipe
    from hf_toolkit.recipe.schema import DataSource
    from hf_toolkit.tasks import TASKS

    recipe = validate_recipe(*read_yaml(args.recipe))  # the recipe's shape only: its start model need not exist yet
    task = TASKS[recipe.task]
    splits = load_splits(recipe.data, task.roles, seed=recipe.seed, optional_roles=task.optional_roles,
                         text_roles=task.text_roles, nonempty_roles=task.nonempty_roles)
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    model = LogisticRegression(C=10, solver="liblinear")
    model.fit(vectorizer.fit_transform(splits["train"]["text"]), splits["train"]["label"])
    validation = load_source(DataSource(file=args.validation_file))
    scores = {
        "held_out_rows": len(splits["validation"]),
        "held_out_accuracy": model.score(vectorizer.transform(splits["validation"]["text"]), splits["validation"]["label"]),
        "validation_csv_rows": len(validation),
        "validation_csv_accuracy": model.score(vectorizer.transform(validation["review"]), validation["label"]),
    }
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()

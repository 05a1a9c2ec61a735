"""hf_toolkit (``hftk``): fine-tune and apply pretrained Hugging Face models from one YAML recipe.

The package imports nothing heavy at top level so that ``hftk --help`` is instant; torch and
transformers are imported inside the functions that need them.
"""

__version__ = "0.1.0"

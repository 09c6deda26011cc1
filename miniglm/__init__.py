"""MiniGLM: train a small Chinese GPT-style chat model end to end.

Run `miniglm --help` for the pipeline's commands. Importing this package has no side effects and
does not import torch.
"""

__version__ = "0.1.0"

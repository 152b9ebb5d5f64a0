"""mistral-operator: serves Mistral MoE models with SGLang on Kubernetes GPU nodes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mistral-operator")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

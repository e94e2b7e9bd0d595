"""transferlab: how much does pretraining help, with how much data, for which model and layers.

The Python API (transferlab.api, docs/python.md) is imported on first use, so that `import transferlab`
stays light (no torch): transferlab.train, transferlab.runs, transferlab.report, transferlab.study_digits."""

__version__ = "0.1.0"

API = ("train", "runs", "report", "study_digits", "Run", "Report")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    # PEP 562's lazy attributes, by importlib: loaded when first used, never when the package is imported.
    import importlib

    if name == "report":  # the report package, which a call turns into transferlab.api.report
        return importlib.import_module("transferlab.report")
    if name in API:
        return getattr(importlib.import_module("transferlab.api"), name)
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")

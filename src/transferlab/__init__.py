"""transferlab: how much does pretraining help, with how much data, for which model and layers."""

__version__ = "0.1.0"

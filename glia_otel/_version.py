"""The client's version: written here once, read by the build (pyproject's `[tool.hatch.version]`) and by the code,
so no run reads package metadata (`importlib.metadata` costs milliseconds)."""

__version__ = "0.1.0"

"""The package version, in one place (setup.cfg reads it without importing oodkit)."""
__version__ = "0.3.0"

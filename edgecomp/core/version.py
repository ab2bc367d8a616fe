"""The package version, in the ground so that every layer can record it without importing the face."""

__version__ = "0.1.0"

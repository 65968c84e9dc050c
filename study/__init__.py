"""Orchestration of transferability studies, and the `mvlpt` command line."""

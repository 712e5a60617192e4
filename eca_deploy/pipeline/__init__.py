"""Stages that the CLI (and `deploy`) run: each one a function over files, with a result to print."""

"""The `eca-deploy` command line: a thin Typer shell over the library."""

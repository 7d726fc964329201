"""The ``tandem`` command line (typer + rich)."""

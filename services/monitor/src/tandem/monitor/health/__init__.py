"""Health plugins: one small module per kind of check, one interface (``check() -> Sample``)."""

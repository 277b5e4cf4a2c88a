"""The top of the house: the `pamgate` command line, one module per command group. Nothing imports it."""

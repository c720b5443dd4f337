"""The command line: `app` (the Typer app, space commands, error handling), `campaign` (run,
resume, status, ls, retrain, fidelity) and `export`."""

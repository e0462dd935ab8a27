"""One recipe per subcommand: a plain ``run(cfg) -> dict`` that cli.py (the only module that
knows the command-line config composer) or a test calls with a composed config."""

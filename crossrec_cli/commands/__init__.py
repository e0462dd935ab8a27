"""One recipe per subcommand. Only this package and cli.py import Hydra."""

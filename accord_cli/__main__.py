"""``python -m accord_cli``: the ``accord`` command without its console script."""

from accord_cli.main import app

app(prog_name="accord")

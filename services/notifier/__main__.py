from services.notifier.main import cli

cli()

from services.agreements.main import cli

cli()

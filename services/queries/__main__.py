from services.queries.main import cli

cli()

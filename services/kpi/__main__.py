from services.kpi.main import cli

cli()

"""The KPI service: KPI definitions and reports, relationship KPIs and customer health."""

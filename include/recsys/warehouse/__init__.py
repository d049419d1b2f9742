"""Writers for the recommendation warehouse (DuckDB embedded, PostgreSQL for teams)."""

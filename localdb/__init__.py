"""Local database servers (embedded PostgreSQL, MariaDB) for the demo, the tests and the benches."""

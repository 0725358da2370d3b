"""raw-db and clean-db: table definitions, engines and the bulk load."""

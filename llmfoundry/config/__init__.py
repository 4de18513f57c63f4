"""Run configuration: YAML loading, schema validation and Composer-style time strings."""

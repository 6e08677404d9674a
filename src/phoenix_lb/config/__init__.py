"""Configuration: schema (pydantic), YAML loader with key-path errors, generated docs."""

"""The settings a stage runs with: the typed TOML sections (config) and the searched space (space)."""

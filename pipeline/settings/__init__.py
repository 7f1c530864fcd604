"""The settings a stage runs with: the typed TOML sections (config), the searched space (space), the TOML parser
(toml), and what hpsearch 0.1 files and stores hold differently (legacy)."""

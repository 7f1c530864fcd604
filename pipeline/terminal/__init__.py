"""What a command prints on its terminal: our own progress lines (lines)."""

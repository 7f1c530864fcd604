"""What a command shows on its terminal: our own progress lines (lines), and the libraries kept quiet (quiet)."""

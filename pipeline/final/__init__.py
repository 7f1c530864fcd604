"""The final training: what it trains with (choice), claimed exactly once per setting (claim), and single
tracked trainings (trainings)."""

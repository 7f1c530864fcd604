"""The final training, claimed exactly once per setting (claim), and single tracked trainings (trainings)."""

"""Several workers on one study: who owns a trial and waiting for the others (ownership), and the `--jobs`
processes started on this machine with their share of the BLAS threads (local)."""

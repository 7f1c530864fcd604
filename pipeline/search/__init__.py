"""The search for λ: the stage loop, the objective, samplers and pruners, the results, and the confirm stage."""

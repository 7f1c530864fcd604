"""Everything MLflow holds: the tracker and the run lifecycle every training shares, the data each run read, the
model registry and its pyfunc model, the links into the MLflow UI, and the figures the runs carry."""

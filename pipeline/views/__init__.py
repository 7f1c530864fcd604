"""What shows the results: the MLflow UI (ui) and the champion's predictions on image files (predict)."""

-- Run once, when PostgreSQL initialises its data folder (docker-entrypoint-initdb.d).
-- Optuna's studies live in the database POSTGRES_DB (optuna); MLflow gets its own, because both keep
-- their schema version in a table named alembic_version.
CREATE DATABASE mlflow;

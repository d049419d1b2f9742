-- The metadata server also hosts MLflow's backend store.
CREATE DATABASE mlflow;

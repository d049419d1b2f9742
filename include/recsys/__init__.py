"""recsys: the logic of the e-commerce recommendation pipeline, importable and testable without Airflow."""

__version__ = "0.1.0"

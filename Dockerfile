# One image for the Airflow, MLflow and Spark services of docker-compose.yaml: Airflow 3.3.2, the
# project's pins (Celery provider included) and Java for Spark, so the Spark driver (in a Celery worker)
# and the executors (in spark-worker) run the same Python, pyspark and project code. OpenBLAS is Spark ML's
# native LAPACK, and Debian's reference BLAS (libblas3) its BLAS: get_spark points the JVMs at it, because
# ALS's many tiny per-rating calls cost less there (recsys.features.spark.spark_ml_blas_library; `make blas`).
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless libopenblas0-pthread libblas3 \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
# Mount points of the named volumes, owned by the airflow user so a fresh volume starts writable.
RUN mkdir -p /opt/recsys/data /opt/mlflow/artifacts \
    && chown -R airflow:0 /opt/recsys /opt/mlflow

USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt pyproject.toml /opt/recsys/
COPY --chown=airflow:0 include /opt/recsys/include
# The FAB provider (the compose file's auth manager) ships with the base image; pinned here to a
# version that resolves against the project's constraints.
RUN pip install --no-cache-dir -r /opt/recsys/requirements.txt -c /opt/recsys/constraints.txt \
        apache-airflow-providers-fab==3.10.2 \
    && pip install --no-cache-dir --no-deps -e /opt/recsys

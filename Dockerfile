# One image for every Airflow service of docker-compose.yaml: Airflow 3.3.2 + the project's pins + Java for Spark.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
COPY requirements.txt constraints.txt pyproject.toml /opt/recsys/
COPY include /opt/recsys/include
RUN pip install --no-cache-dir -r /opt/recsys/requirements.txt -c /opt/recsys/constraints.txt \
        apache-airflow-providers-celery==3.26.0 \
    && pip install --no-cache-dir --no-deps -e /opt/recsys

# The airflow-connectif image: the official Airflow 3.3.2 image (Python 3.11) plus this project's pinned
# requirements and its distribution `airflow-connectif` (provider, sync library, emulator, sample ERP), so that the
# scheduler, the triggerer and every Celery worker import `connectif_provider` and the UI shows the
# `connectif` connection type. Built by `docker compose build` (see docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.11

# A C compiler builds the sync library's optional row-hash accelerator (setup.py); without one the
# library falls back to numpy code that gives the same hashes, several times slower.
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libsqlite3-dev \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

# Extending the official image as its docs recommend: as the `airflow` user, pinning apache-airflow so that
# pip never up- or downgrades it while resolving the project's requirements.
USER airflow
COPY --chown=airflow:0 requirements.txt /opt/airflow/project/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/project/requirements.txt

# The project as a regular (non-editable) install: its `apache_airflow_provider` entry point registers the
# provider with every Airflow component, and `connectif-sync` / `python -m emulator` become available.
COPY --chown=airflow:0 pyproject.toml setup.py README.md /opt/airflow/project/
COPY --chown=airflow:0 plugins/ /opt/airflow/project/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/project/include/
COPY --chown=airflow:0 emulator/ /opt/airflow/project/emulator/
COPY --chown=airflow:0 sample_erp/ /opt/airflow/project/sample_erp/
RUN pip install --no-cache-dir --no-deps /opt/airflow/project \
    && python -c "import connectif_provider, connectif_sync, emulator, sample_erp; from connectif_sync import _hashing"

# DAGs, the Airflow pools and the deployment scripts are baked in, so that workers on other machines need
# nothing but the image.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 deploy/ /opt/airflow/deploy/
COPY --chown=airflow:0 pools.json /opt/airflow/pools.json
# Mount points of named volumes: created here so that the volumes inherit the airflow user's ownership.
RUN mkdir -p /opt/airflow/auth /opt/airflow/work /opt/airflow/emulator-state

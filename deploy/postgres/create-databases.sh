#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d): creates the
# databases named in CONNECTIF_EXTRA_DATABASES (the sync state store + rate-limit bucket, the warehouse),
# owned by POSTGRES_USER, next to the Airflow metadata DB.
set -euo pipefail
for db in ${CONNECTIF_EXTRA_DATABASES:-}; do
    echo "creating database ${db}"
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
        -c "CREATE DATABASE \"${db}\" OWNER \"${POSTGRES_USER}\""
done

#!/usr/bin/env bash
# One-shot initialisation of an airflow-connectif deployment. docker-compose's `airflow-init` runs it, and so
# does `make test-distributed` (deploy/distributed.py), so that the no-Docker proof exercises these very steps.
# Idempotent: running it again migrates nothing new, keeps the pools and refreshes the connection and password.
#
# Reads: AIRFLOW_ADMIN_USERNAME, AIRFLOW_ADMIN_PASSWORD, CONNECTIF_API_KEY, CONNECTIF_HOST,
#        CONNECTIF_RATE_LIMIT_BACKEND, CONNECTIF_RATE_LIMIT_PER_MINUTE, CONNECTIF_STATE_URL,
#        CONNECTIF_POOLS_FILE (default: pools.json at the root of the repo, = /opt/airflow in the image),
#        and Airflow's own AIRFLOW__* settings (metadata DB, simple auth manager users and passwords file).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD}"
: "${CONNECTIF_API_KEY:?set CONNECTIF_API_KEY}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
export AIRFLOW_ADMIN_USERNAME="${AIRFLOW_ADMIN_USERNAME:-admin}"
export CONNECTIF_HOST="${CONNECTIF_HOST:-https://api.connectif.cloud}"
pools_file="${CONNECTIF_POOLS_FILE:-${here}/../pools.json}"
airflow="${AIRFLOW_BIN:-airflow}"
python="${PYTHON_BIN:-python}"

echo "[init] migrating the Airflow metadata database"
"${airflow}" db migrate

echo "[init] admin login ${AIRFLOW_ADMIN_USERNAME} (simple auth manager passwords file)"
# The simple auth manager reads {user: password} from this file; writing it ourselves keeps the password
# the one chosen in .env instead of a generated one printed to the api-server's log.
"${python}" - <<'PY'
import json, os, pathlib
path = pathlib.Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
tmp = path.with_suffix(".tmp")
tmp.write_text(json.dumps({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}))
tmp.chmod(0o600)
tmp.replace(path)
PY

echo "[init] pools from ${pools_file}"
"${airflow}" pools import "${pools_file}"

echo "[init] connection connectif_default -> ${CONNECTIF_HOST}"
# Through a private temporary file rather than the command line, so the API key never shows in `ps`.
conn_file="$(mktemp --suffix=.json)"
trap 'rm -f "${conn_file}"' EXIT
"${python}" "${here}/connections.py" > "${conn_file}"
"${airflow}" connections import --overwrite "${conn_file}"

echo "[init] tables of the sync state store and of the shared rate-limit bucket"
# Created once here, before any worker starts: several workers creating the same PostgreSQL tables at the
# same moment collide (CREATE TABLE races on pg_type), which would cost their first tasks a retry.
CONNECTIF_DEPLOY_DIR="${here}" "${python}" - <<'PY'
import json, os, sys, types
from connectif_provider.hooks.connectif import settings_from_connection
from connectif_sync.state import StateStore

sys.path.insert(0, os.environ["CONNECTIF_DEPLOY_DIR"])
from connections import connections  # the connection just imported, read the way the hook reads it

if os.environ.get("CONNECTIF_STATE_URL"):
    StateStore(os.environ["CONNECTIF_STATE_URL"]).close()
conn = connections(os.environ)["connectif_default"]
extra = json.loads(conn["extra"])
as_connection = types.SimpleNamespace(conn_id="connectif_default", host=conn["host"], port=None,
                                      password=conn["password"])
settings_from_connection(as_connection, extra).limiter().in_window()
PY

echo "[init] done"

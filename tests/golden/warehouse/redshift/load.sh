#!/usr/bin/env bash
# capsule-sync warehouse kit for Redshift, integration `acme`, reading s3://capsule-bucket/exports.
# Loads each committed run once. Needs the aws CLI and psql, PGHOST/PGPORT/PGDATABASE/PGUSER (and
# PGPASSWORD) for the cluster, and REDSHIFT_IAM_ROLE: a role the cluster may assume to read the
# bucket. Run setup.sql once first; views.sql after the first load.
set -euo pipefail
: "${REDSHIFT_IAM_ROLE:?set REDSHIFT_IAM_ROLE to the ARN of a role Redshift can assume to read s3://capsule-bucket/exports}"
loaded=$(psql -XAt -v ON_ERROR_STOP=1 -c 'SELECT manifest FROM "acme__runs"')
aws s3 ls --recursive 's3://capsule-bucket/exports/_meta/acme/runs/' | awk '{print $4}' \
  | grep -E '/runs/[^/]+/[a-z_]+[.]json$' | while read -r key; do
  manifest='s3://capsule-bucket/'"$key"
  if grep -qxF "$manifest" <<<"$loaded"; then continue; fi
  run=$(basename "$(dirname "$key")")
  table=$(basename "$key" .json)
  [[ "$run" =~ ^[A-Za-z0-9-]+$ ]] || { echo "unexpected run id in $key" >&2; exit 1; }
  case "$table" in
    parties) raw='"acme_parties"'; columns='"id", "name", "updatedat", "tags", "_run_id", "_extracted_at", "_event", "_received_at", "_source", "_deleted"' ;;
    deleted_parties) raw='"acme_deleted_parties"'; columns='"id", "deletedat", "_deleted", "_restricted", "_run_id", "_extracted_at"' ;;
    users) raw='"acme_users"'; columns='"id", "username", "name", "status", "locale", "currency", "timezone", "party", "lastloginat", "taskreminder", "emailpreference", "clicktocallpreference", "preferredemailfromaddress", "deleted", "loggedin", "pictureurl", "_run_id", "_extracted_at", "_event", "_received_at", "_source", "_deleted"' ;;
    custom_fields) raw='"acme_custom_fields"'; columns='"id", "name", "description", "type", "tag", "capturerule", "options", "important", "displayorder", "entity", "_run_id", "_extracted_at"' ;;
    *) continue ;;
  esac
  body=$(aws s3 cp "$manifest" - </dev/null)
  extracted_at=$(grep -o '"extracted_at":"[^"]*"' <<<"$body" | cut -d'"' -f4)
  rows=$(grep -o '"rows":[0-9]*' <<<"$body" | tail -1 | cut -d: -f2)  # the run's, after its files'
  redshift_manifest="${manifest%.json}.redshift.json"
  gzip=""
  if aws s3 cp "$redshift_manifest" - </dev/null | grep -q '[.]gz"'; then gzip="GZIP"; fi
  echo "loading $table run $run" >&2
  psql -X -v ON_ERROR_STOP=1 <<SQL
BEGIN;
COPY ${raw} (${columns}) FROM '${redshift_manifest}' IAM_ROLE '${REDSHIFT_IAM_ROLE}' MANIFEST FORMAT AS JSON 'auto ignorecase' ${gzip} TIMEFORMAT 'auto' TRUNCATECOLUMNS;
UPDATE ${raw} SET "dt" = TO_DATE(LEFT("_run_id", 8), 'YYYYMMDD') WHERE "dt" IS NULL;
INSERT INTO "acme__runs" (table_name, run_id, extracted_at, "rows", manifest, loaded_at) VALUES ('${table}', '${run}', '${extracted_at}', ${rows}, '${manifest}', GETDATE());
COMMIT;
SQL
done

-- capsule-sync warehouse kit for DuckDB (≥ 1.1), integration `acme`.
-- Reads s3://capsule-bucket/exports. Run it from any directory, after every sync:
--   duckdb warehouse.duckdb < load.sql
-- It loads each committed run once (runs already in "acme__runs" are skipped).

INSTALL httpfs; LOAD httpfs; INSTALL aws; LOAD aws;
CREATE SECRET IF NOT EXISTS capsule_s3 (TYPE s3, PROVIDER credential_chain);

CREATE TABLE IF NOT EXISTS "acme__runs" (table_name VARCHAR, run_id VARCHAR, extracted_at TIMESTAMPTZ, "rows" BIGINT, manifest VARCHAR, loaded_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS "acme_parties" (
  "id" BIGINT,
  "name" VARCHAR,
  "updatedAt" TIMESTAMPTZ,
  "tags" JSON,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMPTZ,
  "_event" VARCHAR,
  "_received_at" TIMESTAMPTZ,
  "_source" VARCHAR,
  "_deleted" BOOLEAN,
  "dt" DATE
);
ALTER TABLE "acme_parties" ADD COLUMN IF NOT EXISTS "_event" VARCHAR;
ALTER TABLE "acme_parties" ADD COLUMN IF NOT EXISTS "_received_at" TIMESTAMPTZ;
ALTER TABLE "acme_parties" ADD COLUMN IF NOT EXISTS "_source" VARCHAR;
ALTER TABLE "acme_parties" ADD COLUMN IF NOT EXISTS "_deleted" BOOLEAN;
CREATE TABLE IF NOT EXISTS "acme_deleted_parties" (
  "id" BIGINT,
  "deletedAt" TIMESTAMPTZ,
  "_deleted" BOOLEAN,
  "_restricted" BOOLEAN,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMPTZ,
  "dt" DATE
);
CREATE TABLE IF NOT EXISTS "acme_users" (
  "id" BIGINT,
  "username" VARCHAR,
  "name" VARCHAR,
  "status" VARCHAR,
  "locale" VARCHAR,
  "currency" VARCHAR,
  "timezone" VARCHAR,
  "party" JSON,
  "lastLoginAt" TIMESTAMPTZ,
  "taskReminder" BOOLEAN,
  "emailPreference" VARCHAR,
  "clickToCallPreference" VARCHAR,
  "preferredEmailFromAddress" VARCHAR,
  "deleted" BOOLEAN,
  "loggedIn" BOOLEAN,
  "pictureURL" VARCHAR,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMPTZ,
  "_event" VARCHAR,
  "_received_at" TIMESTAMPTZ,
  "_source" VARCHAR,
  "_deleted" BOOLEAN,
  "dt" DATE
);
ALTER TABLE "acme_users" ADD COLUMN IF NOT EXISTS "_event" VARCHAR;
ALTER TABLE "acme_users" ADD COLUMN IF NOT EXISTS "_received_at" TIMESTAMPTZ;
ALTER TABLE "acme_users" ADD COLUMN IF NOT EXISTS "_source" VARCHAR;
ALTER TABLE "acme_users" ADD COLUMN IF NOT EXISTS "_deleted" BOOLEAN;
CREATE TABLE IF NOT EXISTS "acme_custom_fields" (
  "id" BIGINT,
  "name" VARCHAR,
  "description" VARCHAR,
  "type" VARCHAR,
  "tag" JSON,
  "captureRule" VARCHAR,
  "options" JSON,
  "important" BOOLEAN,
  "displayOrder" BIGINT,
  "entity" VARCHAR,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMPTZ,
  "dt" DATE
);

-- A list of paths as the text of a SQL list literal (quotes doubled; chr(1) never occurs in a path).
CREATE OR REPLACE MACRO capsule_sql_list(paths) AS
  '[''' || replace(replace(array_to_string(paths, chr(1)), '''', ''''''), chr(1), ''', ''') || ''']';

BEGIN TRANSACTION;
-- Published manifests not loaded yet (`<table>.json`; not `.pending`, `.parents` or `.redshift`).
SET VARIABLE capsule_manifests = (
  SELECT coalesce(list(file ORDER BY file), []::VARCHAR[]) FROM glob('s3://capsule-bucket/exports/_meta/acme/runs/*/*.json')
  WHERE regexp_matches(file, '/runs/[^/]+/[a-z_]+[.]json$') AND file NOT IN (SELECT manifest FROM "acme__runs")
);
SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_manifests')) = 0
  THEN 'SELECT NULL::VARCHAR AS table_name, NULL::VARCHAR AS run_id, NULL::TIMESTAMPTZ AS extracted_at, NULL::BIGINT AS "rows", NULL::STRUCT(key VARCHAR, "rows" BIGINT)[] AS files, NULL::VARCHAR AS manifest WHERE false'
  ELSE 'SELECT "table" AS table_name, run_id, extracted_at, "rows", files, filename AS manifest FROM read_json(' || capsule_sql_list(getvariable('capsule_manifests')) || ', columns = {''table'': ''VARCHAR'', ''run_id'': ''VARCHAR'', ''extracted_at'': ''TIMESTAMPTZ'', ''rows'': ''BIGINT'', ''files'': ''STRUCT(key VARCHAR, "rows" BIGINT)[]''}, filename = true)' END;
CREATE OR REPLACE TEMP TABLE capsule_new_runs AS SELECT * FROM query(getvariable('capsule_sql'));

-- parties
SET VARIABLE capsule_files = (
  SELECT coalesce(list('s3://capsule-bucket/exports/' || f.key ORDER BY f.key), []::VARCHAR[])
  FROM (SELECT unnest(files) AS f FROM capsule_new_runs WHERE table_name = 'parties')
);
SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_files')) = 0
  THEN 'SELECT * FROM "acme_parties" LIMIT 0'
  ELSE 'SELECT "id", "name", "updatedAt", "tags", "_run_id", "_extracted_at", "_event", "_received_at", "_source", "_deleted", "dt" FROM read_json(' || capsule_sql_list(getvariable('capsule_files')) || ', format = ''newline_delimited'', columns = {''id'': ''BIGINT'', ''name'': ''VARCHAR'', ''updatedAt'': ''TIMESTAMPTZ'', ''tags'': ''JSON'', ''_run_id'': ''VARCHAR'', ''_extracted_at'': ''TIMESTAMPTZ'', ''_event'': ''VARCHAR'', ''_received_at'': ''TIMESTAMPTZ'', ''_source'': ''VARCHAR'', ''_deleted'': ''BOOLEAN''}, hive_partitioning = true, hive_types = {''dt'': ''DATE''})' END;
INSERT INTO "acme_parties" BY NAME SELECT * FROM query(getvariable('capsule_sql'));

-- deleted_parties
SET VARIABLE capsule_files = (
  SELECT coalesce(list('s3://capsule-bucket/exports/' || f.key ORDER BY f.key), []::VARCHAR[])
  FROM (SELECT unnest(files) AS f FROM capsule_new_runs WHERE table_name = 'deleted_parties')
);
SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_files')) = 0
  THEN 'SELECT * FROM "acme_deleted_parties" LIMIT 0'
  ELSE 'SELECT "id", "deletedAt", "_deleted", "_restricted", "_run_id", "_extracted_at", "dt" FROM read_json(' || capsule_sql_list(getvariable('capsule_files')) || ', format = ''newline_delimited'', columns = {''id'': ''BIGINT'', ''deletedAt'': ''TIMESTAMPTZ'', ''_deleted'': ''BOOLEAN'', ''_restricted'': ''BOOLEAN'', ''_run_id'': ''VARCHAR'', ''_extracted_at'': ''TIMESTAMPTZ''}, hive_partitioning = true, hive_types = {''dt'': ''DATE''})' END;
INSERT INTO "acme_deleted_parties" BY NAME SELECT * FROM query(getvariable('capsule_sql'));

-- users
SET VARIABLE capsule_files = (
  SELECT coalesce(list('s3://capsule-bucket/exports/' || f.key ORDER BY f.key), []::VARCHAR[])
  FROM (SELECT unnest(files) AS f FROM capsule_new_runs WHERE table_name = 'users')
);
SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_files')) = 0
  THEN 'SELECT * FROM "acme_users" LIMIT 0'
  ELSE 'SELECT "id", "username", "name", "status", "locale", "currency", "timezone", "party", "lastLoginAt", "taskReminder", "emailPreference", "clickToCallPreference", "preferredEmailFromAddress", "deleted", "loggedIn", "pictureURL", "_run_id", "_extracted_at", "_event", "_received_at", "_source", "_deleted", "dt" FROM read_json(' || capsule_sql_list(getvariable('capsule_files')) || ', format = ''newline_delimited'', columns = {''id'': ''BIGINT'', ''username'': ''VARCHAR'', ''name'': ''VARCHAR'', ''status'': ''VARCHAR'', ''locale'': ''VARCHAR'', ''currency'': ''VARCHAR'', ''timezone'': ''VARCHAR'', ''party'': ''JSON'', ''lastLoginAt'': ''TIMESTAMPTZ'', ''taskReminder'': ''BOOLEAN'', ''emailPreference'': ''VARCHAR'', ''clickToCallPreference'': ''VARCHAR'', ''preferredEmailFromAddress'': ''VARCHAR'', ''deleted'': ''BOOLEAN'', ''loggedIn'': ''BOOLEAN'', ''pictureURL'': ''VARCHAR'', ''_run_id'': ''VARCHAR'', ''_extracted_at'': ''TIMESTAMPTZ'', ''_event'': ''VARCHAR'', ''_received_at'': ''TIMESTAMPTZ'', ''_source'': ''VARCHAR'', ''_deleted'': ''BOOLEAN''}, hive_partitioning = true, hive_types = {''dt'': ''DATE''})' END;
INSERT INTO "acme_users" BY NAME SELECT * FROM query(getvariable('capsule_sql'));

-- custom_fields
SET VARIABLE capsule_files = (
  SELECT coalesce(list('s3://capsule-bucket/exports/' || f.key ORDER BY f.key), []::VARCHAR[])
  FROM (SELECT unnest(files) AS f FROM capsule_new_runs WHERE table_name = 'custom_fields')
);
SET VARIABLE capsule_sql = CASE WHEN len(getvariable('capsule_files')) = 0
  THEN 'SELECT * FROM "acme_custom_fields" LIMIT 0'
  ELSE 'SELECT "id", "name", "description", "type", "tag", "captureRule", "options", "important", "displayOrder", "entity", "_run_id", "_extracted_at", "dt" FROM read_json(' || capsule_sql_list(getvariable('capsule_files')) || ', format = ''newline_delimited'', columns = {''id'': ''BIGINT'', ''name'': ''VARCHAR'', ''description'': ''VARCHAR'', ''type'': ''VARCHAR'', ''tag'': ''JSON'', ''captureRule'': ''VARCHAR'', ''options'': ''JSON'', ''important'': ''BOOLEAN'', ''displayOrder'': ''BIGINT'', ''entity'': ''VARCHAR'', ''_run_id'': ''VARCHAR'', ''_extracted_at'': ''TIMESTAMPTZ''}, hive_partitioning = true, hive_types = {''dt'': ''DATE''})' END;
INSERT INTO "acme_custom_fields" BY NAME SELECT * FROM query(getvariable('capsule_sql'));

INSERT INTO "acme__runs" SELECT table_name, run_id, extracted_at, "rows", manifest, now() FROM capsule_new_runs;
COMMIT;

-- Current state: the latest row per key; deletions applied; restricted rows flagged.

CREATE OR REPLACE VIEW "acme_parties_current" AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY "id" ORDER BY CASE WHEN coalesce("_deleted", false) THEN "_received_at" ELSE "updatedAt" END DESC NULLS LAST, "_extracted_at" DESC) AS capsule_rank
    FROM (SELECT * FROM "acme_parties" WHERE "_run_id" IN (SELECT run_id FROM "acme__runs" WHERE table_name = 'parties')) AS r
  ) AS ranked
  WHERE capsule_rank = 1
),
gone AS (
  SELECT "id",
    max(CASE WHEN "_deleted" THEN "_extracted_at" END) AS deleted_seen,
    max(CASE WHEN "_restricted" THEN "_extracted_at" END) AS restricted_seen
  FROM (SELECT * FROM "acme_deleted_parties" WHERE "_run_id" IN (SELECT run_id FROM "acme__runs" WHERE table_name = 'deleted_parties')) AS d
  GROUP BY "id"
)
SELECT latest."id", latest."name", latest."updatedAt", latest."tags", latest."_run_id", latest."_extracted_at", latest."_event", latest."_received_at", latest."_source", latest."_deleted", latest."dt",
  coalesce(gone.restricted_seen >= latest."_extracted_at", false) AS "_restricted"
FROM latest
LEFT JOIN gone ON gone."id" = latest."id"
WHERE (gone.deleted_seen IS NULL OR gone.deleted_seen < CASE WHEN latest."_source" = 'hook' THEN latest."updatedAt" ELSE latest."_extracted_at" END)
  AND NOT coalesce(latest."_deleted", false);

CREATE OR REPLACE VIEW "acme_deleted_parties_current" AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY "id" ORDER BY "_extracted_at" DESC) AS capsule_rank
    FROM (SELECT * FROM "acme_deleted_parties" WHERE "_run_id" IN (SELECT run_id FROM "acme__runs" WHERE table_name = 'deleted_parties')) AS r
  ) AS ranked
  WHERE capsule_rank = 1
)
SELECT latest."id", latest."deletedAt", latest."_deleted", latest."_restricted", latest."_run_id", latest."_extracted_at", latest."dt"
FROM latest;

CREATE OR REPLACE VIEW "acme_users_current" AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY "id" ORDER BY "_extracted_at" DESC) AS capsule_rank
    FROM (SELECT * FROM "acme_users" WHERE "_run_id" IN (SELECT run_id FROM "acme__runs" WHERE table_name = 'users')) AS r
    WHERE "_run_id" = (SELECT run_id FROM "acme__runs" WHERE table_name = 'users' AND run_id NOT LIKE '%-hook%' ORDER BY extracted_at DESC, run_id DESC LIMIT 1)
       OR ("_source" = 'hook' AND NOT coalesce("_received_at" <= (SELECT max(extracted_at) FROM "acme__runs" WHERE table_name = 'users' AND run_id NOT LIKE '%-hook%'), false))
  ) AS ranked
  WHERE capsule_rank = 1
)
SELECT latest."id", latest."username", latest."name", latest."status", latest."locale", latest."currency", latest."timezone", latest."party", latest."lastLoginAt", latest."taskReminder", latest."emailPreference", latest."clickToCallPreference", latest."preferredEmailFromAddress", latest."deleted", latest."loggedIn", latest."pictureURL", latest."_run_id", latest."_extracted_at", latest."_event", latest."_received_at", latest."_source", latest."_deleted", latest."dt"
FROM latest
WHERE NOT coalesce(latest."_deleted", false);

CREATE OR REPLACE VIEW "acme_custom_fields_current" AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY "entity", "id" ORDER BY "_extracted_at" DESC) AS capsule_rank
    FROM (SELECT * FROM "acme_custom_fields" WHERE "_run_id" IN (SELECT run_id FROM "acme__runs" WHERE table_name = 'custom_fields')) AS r
    WHERE "_run_id" = (SELECT run_id FROM "acme__runs" WHERE table_name = 'custom_fields' ORDER BY extracted_at DESC, run_id DESC LIMIT 1)
  ) AS ranked
  WHERE capsule_rank = 1
)
SELECT latest."id", latest."name", latest."description", latest."type", latest."tag", latest."captureRule", latest."options", latest."important", latest."displayOrder", latest."entity", latest."_run_id", latest."_extracted_at", latest."dt"
FROM latest;

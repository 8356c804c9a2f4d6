-- capsule-sync warehouse kit for Redshift, integration `acme`, reading s3://capsule-bucket/exports.

CREATE TABLE IF NOT EXISTS "acme__runs" (table_name VARCHAR(64), run_id VARCHAR(64), extracted_at TIMESTAMPTZ, "rows" BIGINT, manifest VARCHAR(1024), loaded_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS "acme_parties" (
  "id" BIGINT,
  "name" VARCHAR(65535),
  "updatedat" TIMESTAMPTZ,
  "tags" SUPER,
  "_run_id" VARCHAR(65535),
  "_extracted_at" TIMESTAMPTZ,
  "_event" VARCHAR(65535),
  "_received_at" TIMESTAMPTZ,
  "_source" VARCHAR(65535),
  "_deleted" BOOLEAN,
  "dt" DATE
)
SORTKEY ("_extracted_at");
CREATE TABLE IF NOT EXISTS "acme_deleted_parties" (
  "id" BIGINT,
  "deletedat" TIMESTAMPTZ,
  "_deleted" BOOLEAN,
  "_restricted" BOOLEAN,
  "_run_id" VARCHAR(65535),
  "_extracted_at" TIMESTAMPTZ,
  "dt" DATE
)
SORTKEY ("_extracted_at");
CREATE TABLE IF NOT EXISTS "acme_users" (
  "id" BIGINT,
  "username" VARCHAR(65535),
  "name" VARCHAR(65535),
  "status" VARCHAR(65535),
  "locale" VARCHAR(65535),
  "currency" VARCHAR(65535),
  "timezone" VARCHAR(65535),
  "party" SUPER,
  "lastloginat" TIMESTAMPTZ,
  "taskreminder" BOOLEAN,
  "emailpreference" VARCHAR(65535),
  "clicktocallpreference" VARCHAR(65535),
  "preferredemailfromaddress" VARCHAR(65535),
  "deleted" BOOLEAN,
  "loggedin" BOOLEAN,
  "pictureurl" VARCHAR(65535),
  "_run_id" VARCHAR(65535),
  "_extracted_at" TIMESTAMPTZ,
  "_event" VARCHAR(65535),
  "_received_at" TIMESTAMPTZ,
  "_source" VARCHAR(65535),
  "_deleted" BOOLEAN,
  "dt" DATE
)
SORTKEY ("_extracted_at");
CREATE TABLE IF NOT EXISTS "acme_custom_fields" (
  "id" BIGINT,
  "name" VARCHAR(65535),
  "description" VARCHAR(65535),
  "type" VARCHAR(65535),
  "tag" SUPER,
  "capturerule" VARCHAR(65535),
  "options" SUPER,
  "important" BOOLEAN,
  "displayorder" BIGINT,
  "entity" VARCHAR(65535),
  "_run_id" VARCHAR(65535),
  "_extracted_at" TIMESTAMPTZ,
  "dt" DATE
)
SORTKEY ("_extracted_at");

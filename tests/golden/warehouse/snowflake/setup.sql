-- capsule-sync warehouse kit for Snowflake, integration `acme`, reading s3://capsule-bucket/exports.

-- Needs a storage integration `capsule_s3` allowed to read this location.
CREATE STAGE IF NOT EXISTS "acme_stage" URL = 's3://capsule-bucket/exports/' STORAGE_INTEGRATION = capsule_s3 FILE_FORMAT = (TYPE = JSON);
CREATE TABLE IF NOT EXISTS "acme__runs" (table_name VARCHAR, run_id VARCHAR, extracted_at TIMESTAMP_TZ, "rows" NUMBER(38, 0), manifest VARCHAR, loaded_at TIMESTAMP_TZ);
CREATE TABLE IF NOT EXISTS "acme_parties" (
  "id" NUMBER(38, 0),
  "name" VARCHAR,
  "updatedAt" TIMESTAMP_TZ,
  "tags" VARIANT,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMP_TZ,
  "_event" VARCHAR,
  "_received_at" TIMESTAMP_TZ,
  "_source" VARCHAR,
  "_deleted" BOOLEAN,
  "dt" DATE,
  "_file" VARCHAR
);
CREATE TABLE IF NOT EXISTS "acme_deleted_parties" (
  "id" NUMBER(38, 0),
  "deletedAt" TIMESTAMP_TZ,
  "_deleted" BOOLEAN,
  "_restricted" BOOLEAN,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMP_TZ,
  "dt" DATE,
  "_file" VARCHAR
);
CREATE TABLE IF NOT EXISTS "acme_users" (
  "id" NUMBER(38, 0),
  "username" VARCHAR,
  "name" VARCHAR,
  "status" VARCHAR,
  "locale" VARCHAR,
  "currency" VARCHAR,
  "timezone" VARCHAR,
  "party" VARIANT,
  "lastLoginAt" TIMESTAMP_TZ,
  "taskReminder" BOOLEAN,
  "emailPreference" VARCHAR,
  "clickToCallPreference" VARCHAR,
  "preferredEmailFromAddress" VARCHAR,
  "deleted" BOOLEAN,
  "loggedIn" BOOLEAN,
  "pictureURL" VARCHAR,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMP_TZ,
  "_event" VARCHAR,
  "_received_at" TIMESTAMP_TZ,
  "_source" VARCHAR,
  "_deleted" BOOLEAN,
  "dt" DATE,
  "_file" VARCHAR
);
CREATE TABLE IF NOT EXISTS "acme_custom_fields" (
  "id" NUMBER(38, 0),
  "name" VARCHAR,
  "description" VARCHAR,
  "type" VARCHAR,
  "tag" VARIANT,
  "captureRule" VARCHAR,
  "options" VARIANT,
  "important" BOOLEAN,
  "displayOrder" NUMBER(38, 0),
  "entity" VARCHAR,
  "_run_id" VARCHAR,
  "_extracted_at" TIMESTAMP_TZ,
  "dt" DATE,
  "_file" VARCHAR
);

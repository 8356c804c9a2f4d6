-- capsule-sync warehouse kit for BigQuery, integration `acme`, reading s3://capsule-bucket/exports.
-- bq query --use_legacy_sql=false --dataset_id=PROJECT:DATASET < FILE
-- BigQuery reads Cloud Storage: mirror the files to gs:// (Storage Transfer Service, or
-- `gcloud storage rsync`) and write this kit again with `--location gs://BUCKET/PREFIX`.

-- Every manifest of the integration; only published ones (`<table>.json`) are used.
CREATE OR REPLACE EXTERNAL TABLE `acme__manifests` (
  `table` STRING,
  run_id STRING,
  extracted_at TIMESTAMP,
  `rows` INT64,
  files ARRAY<STRUCT<key STRING, `rows` INT64>>
)
OPTIONS (format = 'NEWLINE_DELIMITED_JSON', ignore_unknown_values = true, max_bad_records = 1000000, uris = ['s3://capsule-bucket/exports/_meta/acme/runs/*']);
CREATE TABLE IF NOT EXISTS `acme__runs` (table_name STRING, run_id STRING, extracted_at TIMESTAMP, `rows` INT64, manifest STRING, loaded_at TIMESTAMP);

CREATE OR REPLACE EXTERNAL TABLE `acme_parties__files` (
  `id` INT64,
  `name` STRING,
  `updatedAt` TIMESTAMP,
  `tags` JSON,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  `_event` STRING,
  `_received_at` TIMESTAMP,
  `_source` STRING,
  `_deleted` BOOL
)
OPTIONS (format = 'NEWLINE_DELIMITED_JSON', compression = 'GZIP', ignore_unknown_values = true, uris = ['s3://capsule-bucket/exports/acme/parties/*']);
CREATE TABLE IF NOT EXISTS `acme_parties` (
  `id` INT64,
  `name` STRING,
  `updatedAt` TIMESTAMP,
  `tags` JSON,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  `_event` STRING,
  `_received_at` TIMESTAMP,
  `_source` STRING,
  `_deleted` BOOL,
  dt DATE
)
PARTITION BY dt
CLUSTER BY `id`;

CREATE OR REPLACE EXTERNAL TABLE `acme_deleted_parties__files` (
  `id` INT64,
  `deletedAt` TIMESTAMP,
  `_deleted` BOOL,
  `_restricted` BOOL,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP
)
OPTIONS (format = 'NEWLINE_DELIMITED_JSON', compression = 'GZIP', ignore_unknown_values = true, uris = ['s3://capsule-bucket/exports/acme/deleted_parties/*']);
CREATE TABLE IF NOT EXISTS `acme_deleted_parties` (
  `id` INT64,
  `deletedAt` TIMESTAMP,
  `_deleted` BOOL,
  `_restricted` BOOL,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  dt DATE
)
PARTITION BY dt
CLUSTER BY `id`;

CREATE OR REPLACE EXTERNAL TABLE `acme_users__files` (
  `id` INT64,
  `username` STRING,
  `name` STRING,
  `status` STRING,
  `locale` STRING,
  `currency` STRING,
  `timezone` STRING,
  `party` JSON,
  `lastLoginAt` TIMESTAMP,
  `taskReminder` BOOL,
  `emailPreference` STRING,
  `clickToCallPreference` STRING,
  `preferredEmailFromAddress` STRING,
  `deleted` BOOL,
  `loggedIn` BOOL,
  `pictureURL` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  `_event` STRING,
  `_received_at` TIMESTAMP,
  `_source` STRING,
  `_deleted` BOOL
)
OPTIONS (format = 'NEWLINE_DELIMITED_JSON', compression = 'GZIP', ignore_unknown_values = true, uris = ['s3://capsule-bucket/exports/acme/users/*']);
CREATE TABLE IF NOT EXISTS `acme_users` (
  `id` INT64,
  `username` STRING,
  `name` STRING,
  `status` STRING,
  `locale` STRING,
  `currency` STRING,
  `timezone` STRING,
  `party` JSON,
  `lastLoginAt` TIMESTAMP,
  `taskReminder` BOOL,
  `emailPreference` STRING,
  `clickToCallPreference` STRING,
  `preferredEmailFromAddress` STRING,
  `deleted` BOOL,
  `loggedIn` BOOL,
  `pictureURL` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  `_event` STRING,
  `_received_at` TIMESTAMP,
  `_source` STRING,
  `_deleted` BOOL,
  dt DATE
)
PARTITION BY dt
CLUSTER BY `id`;

CREATE OR REPLACE EXTERNAL TABLE `acme_custom_fields__files` (
  `id` INT64,
  `name` STRING,
  `description` STRING,
  `type` STRING,
  `tag` JSON,
  `captureRule` STRING,
  `options` JSON,
  `important` BOOL,
  `displayOrder` INT64,
  `entity` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP
)
OPTIONS (format = 'NEWLINE_DELIMITED_JSON', compression = 'GZIP', ignore_unknown_values = true, uris = ['s3://capsule-bucket/exports/acme/custom_fields/*']);
CREATE TABLE IF NOT EXISTS `acme_custom_fields` (
  `id` INT64,
  `name` STRING,
  `description` STRING,
  `type` STRING,
  `tag` JSON,
  `captureRule` STRING,
  `options` JSON,
  `important` BOOL,
  `displayOrder` INT64,
  `entity` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  dt DATE
)
PARTITION BY dt
CLUSTER BY `entity`, `id`;

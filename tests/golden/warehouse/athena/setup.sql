-- capsule-sync warehouse kit for Athena, integration `acme`, reading s3://capsule-bucket/exports.
-- Run each statement in the Athena console or `aws athena start-query-execution`.

CREATE EXTERNAL TABLE IF NOT EXISTS `acme__manifests` (
  `table_name` STRING,
  `run_id` STRING,
  `extracted_at` TIMESTAMP,
  `rows` BIGINT
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true', 'mapping.table_name' = 'table')
LOCATION 's3://capsule-bucket/exports/_meta/acme/runs/';

CREATE EXTERNAL TABLE IF NOT EXISTS `acme_parties` (
  `id` BIGINT,
  `name` STRING,
  `updatedAt` TIMESTAMP,
  `tags` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  `_event` STRING,
  `_received_at` TIMESTAMP,
  `_source` STRING,
  `_deleted` BOOLEAN
)
PARTITIONED BY (`dt` DATE)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://capsule-bucket/exports/acme/parties/'
TBLPROPERTIES ('projection.enabled' = 'true', 'projection.dt.type' = 'date', 'projection.dt.format' = 'yyyy-MM-dd', 'projection.dt.range' = '2000-01-01,NOW', 'projection.dt.interval' = '1', 'projection.dt.interval.unit' = 'DAYS', 'storage.location.template' = 's3://capsule-bucket/exports/acme/parties/dt=${dt}/');

CREATE EXTERNAL TABLE IF NOT EXISTS `acme_deleted_parties` (
  `id` BIGINT,
  `deletedAt` TIMESTAMP,
  `_deleted` BOOLEAN,
  `_restricted` BOOLEAN,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP
)
PARTITIONED BY (`dt` DATE)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://capsule-bucket/exports/acme/deleted_parties/'
TBLPROPERTIES ('projection.enabled' = 'true', 'projection.dt.type' = 'date', 'projection.dt.format' = 'yyyy-MM-dd', 'projection.dt.range' = '2000-01-01,NOW', 'projection.dt.interval' = '1', 'projection.dt.interval.unit' = 'DAYS', 'storage.location.template' = 's3://capsule-bucket/exports/acme/deleted_parties/dt=${dt}/');

CREATE EXTERNAL TABLE IF NOT EXISTS `acme_users` (
  `id` BIGINT,
  `username` STRING,
  `name` STRING,
  `status` STRING,
  `locale` STRING,
  `currency` STRING,
  `timezone` STRING,
  `party` STRING,
  `lastLoginAt` TIMESTAMP,
  `taskReminder` BOOLEAN,
  `emailPreference` STRING,
  `clickToCallPreference` STRING,
  `preferredEmailFromAddress` STRING,
  `deleted` BOOLEAN,
  `loggedIn` BOOLEAN,
  `pictureURL` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP,
  `_event` STRING,
  `_received_at` TIMESTAMP,
  `_source` STRING,
  `_deleted` BOOLEAN
)
PARTITIONED BY (`dt` DATE)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://capsule-bucket/exports/acme/users/'
TBLPROPERTIES ('projection.enabled' = 'true', 'projection.dt.type' = 'date', 'projection.dt.format' = 'yyyy-MM-dd', 'projection.dt.range' = '2000-01-01,NOW', 'projection.dt.interval' = '1', 'projection.dt.interval.unit' = 'DAYS', 'storage.location.template' = 's3://capsule-bucket/exports/acme/users/dt=${dt}/');

CREATE EXTERNAL TABLE IF NOT EXISTS `acme_custom_fields` (
  `id` BIGINT,
  `name` STRING,
  `description` STRING,
  `type` STRING,
  `tag` STRING,
  `captureRule` STRING,
  `options` STRING,
  `important` BOOLEAN,
  `displayOrder` BIGINT,
  `entity` STRING,
  `_run_id` STRING,
  `_extracted_at` TIMESTAMP
)
PARTITIONED BY (`dt` DATE)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://capsule-bucket/exports/acme/custom_fields/'
TBLPROPERTIES ('projection.enabled' = 'true', 'projection.dt.type' = 'date', 'projection.dt.format' = 'yyyy-MM-dd', 'projection.dt.range' = '2000-01-01,NOW', 'projection.dt.interval' = '1', 'projection.dt.interval.unit' = 'DAYS', 'storage.location.template' = 's3://capsule-bucket/exports/acme/custom_fields/dt=${dt}/');


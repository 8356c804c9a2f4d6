-- capsule-sync warehouse kit for BigQuery, integration `acme`, reading s3://capsule-bucket/exports.
-- bq query --use_legacy_sql=false --dataset_id=PROJECT:DATASET < FILE
-- BigQuery reads Cloud Storage: mirror the files to gs:// (Storage Transfer Service, or
-- `gcloud storage rsync`) and write this kit again with `--location gs://BUCKET/PREFIX`.

-- Loads each committed run once: the files its published manifest lists.
BEGIN TRANSACTION;
CREATE TEMP TABLE capsule_new_runs AS
SELECT m.`table` AS table_name, m.run_id, m.extracted_at, m.`rows`, m.files, m._FILE_NAME AS manifest
FROM `acme__manifests` AS m
WHERE REGEXP_CONTAINS(m._FILE_NAME, r'/runs/[^/]+/[a-z_]+[.]json$')
  AND m._FILE_NAME NOT IN (SELECT manifest FROM `acme__runs`);
INSERT INTO `acme_parties` (`id`, `name`, `updatedAt`, `tags`, `_run_id`, `_extracted_at`, `_event`, `_received_at`, `_source`, `_deleted`, dt)
SELECT `id`, `name`, `updatedAt`, `tags`, `_run_id`, `_extracted_at`, `_event`, `_received_at`, `_source`, `_deleted`, PARSE_DATE('%Y-%m-%d', REGEXP_EXTRACT(_FILE_NAME, r'/dt=([0-9-]+)/')) FROM `acme_parties__files`
WHERE _FILE_NAME IN (SELECT CONCAT('s3://capsule-bucket/exports/', f.key) FROM capsule_new_runs AS n, UNNEST(n.files) AS f WHERE n.table_name = 'parties');
INSERT INTO `acme_deleted_parties` (`id`, `deletedAt`, `_deleted`, `_restricted`, `_run_id`, `_extracted_at`, dt)
SELECT `id`, `deletedAt`, `_deleted`, `_restricted`, `_run_id`, `_extracted_at`, PARSE_DATE('%Y-%m-%d', REGEXP_EXTRACT(_FILE_NAME, r'/dt=([0-9-]+)/')) FROM `acme_deleted_parties__files`
WHERE _FILE_NAME IN (SELECT CONCAT('s3://capsule-bucket/exports/', f.key) FROM capsule_new_runs AS n, UNNEST(n.files) AS f WHERE n.table_name = 'deleted_parties');
INSERT INTO `acme_users` (`id`, `username`, `name`, `status`, `locale`, `currency`, `timezone`, `party`, `lastLoginAt`, `taskReminder`, `emailPreference`, `clickToCallPreference`, `preferredEmailFromAddress`, `deleted`, `loggedIn`, `pictureURL`, `_run_id`, `_extracted_at`, `_event`, `_received_at`, `_source`, `_deleted`, dt)
SELECT `id`, `username`, `name`, `status`, `locale`, `currency`, `timezone`, `party`, `lastLoginAt`, `taskReminder`, `emailPreference`, `clickToCallPreference`, `preferredEmailFromAddress`, `deleted`, `loggedIn`, `pictureURL`, `_run_id`, `_extracted_at`, `_event`, `_received_at`, `_source`, `_deleted`, PARSE_DATE('%Y-%m-%d', REGEXP_EXTRACT(_FILE_NAME, r'/dt=([0-9-]+)/')) FROM `acme_users__files`
WHERE _FILE_NAME IN (SELECT CONCAT('s3://capsule-bucket/exports/', f.key) FROM capsule_new_runs AS n, UNNEST(n.files) AS f WHERE n.table_name = 'users');
INSERT INTO `acme_custom_fields` (`id`, `name`, `description`, `type`, `tag`, `captureRule`, `options`, `important`, `displayOrder`, `entity`, `_run_id`, `_extracted_at`, dt)
SELECT `id`, `name`, `description`, `type`, `tag`, `captureRule`, `options`, `important`, `displayOrder`, `entity`, `_run_id`, `_extracted_at`, PARSE_DATE('%Y-%m-%d', REGEXP_EXTRACT(_FILE_NAME, r'/dt=([0-9-]+)/')) FROM `acme_custom_fields__files`
WHERE _FILE_NAME IN (SELECT CONCAT('s3://capsule-bucket/exports/', f.key) FROM capsule_new_runs AS n, UNNEST(n.files) AS f WHERE n.table_name = 'custom_fields');
INSERT INTO `acme__runs` (table_name, run_id, extracted_at, `rows`, manifest, loaded_at)
SELECT table_name, run_id, extracted_at, `rows`, manifest, CURRENT_TIMESTAMP() FROM capsule_new_runs;
COMMIT TRANSACTION;

-- capsule-sync warehouse kit for BigQuery, integration `acme`, reading s3://capsule-bucket/exports.
-- bq query --use_legacy_sql=false --dataset_id=PROJECT:DATASET < FILE
-- BigQuery reads Cloud Storage: mirror the files to gs:// (Storage Transfer Service, or
-- `gcloud storage rsync`) and write this kit again with `--location gs://BUCKET/PREFIX`.


CREATE OR REPLACE VIEW `acme_parties_current` AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY `id` ORDER BY CASE WHEN coalesce(`_deleted`, false) THEN `_received_at` ELSE `updatedAt` END DESC NULLS LAST, `_extracted_at` DESC) AS capsule_rank
    FROM (SELECT * FROM `acme_parties` WHERE `_run_id` IN (SELECT run_id FROM `acme__runs` WHERE table_name = 'parties')) AS r
  ) AS ranked
  WHERE capsule_rank = 1
),
gone AS (
  SELECT `id`,
    max(CASE WHEN `_deleted` THEN `_extracted_at` END) AS deleted_seen,
    max(CASE WHEN `_restricted` THEN `_extracted_at` END) AS restricted_seen
  FROM (SELECT * FROM `acme_deleted_parties` WHERE `_run_id` IN (SELECT run_id FROM `acme__runs` WHERE table_name = 'deleted_parties')) AS d
  GROUP BY `id`
)
SELECT latest.`id`, latest.`name`, latest.`updatedAt`, latest.`tags`, latest.`_run_id`, latest.`_extracted_at`, latest.`_event`, latest.`_received_at`, latest.`_source`, latest.`_deleted`, latest.`dt`,
  coalesce(gone.restricted_seen >= latest.`_extracted_at`, false) AS `_restricted`
FROM latest
LEFT JOIN gone ON gone.`id` = latest.`id`
WHERE (gone.deleted_seen IS NULL OR gone.deleted_seen < CASE WHEN latest.`_source` = 'hook' THEN latest.`updatedAt` ELSE latest.`_extracted_at` END)
  AND NOT coalesce(latest.`_deleted`, false);

CREATE OR REPLACE VIEW `acme_deleted_parties_current` AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY `id` ORDER BY `_extracted_at` DESC) AS capsule_rank
    FROM (SELECT * FROM `acme_deleted_parties` WHERE `_run_id` IN (SELECT run_id FROM `acme__runs` WHERE table_name = 'deleted_parties')) AS r
  ) AS ranked
  WHERE capsule_rank = 1
)
SELECT latest.`id`, latest.`deletedAt`, latest.`_deleted`, latest.`_restricted`, latest.`_run_id`, latest.`_extracted_at`, latest.`dt`
FROM latest;

CREATE OR REPLACE VIEW `acme_users_current` AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY `id` ORDER BY `_extracted_at` DESC) AS capsule_rank
    FROM (SELECT * FROM `acme_users` WHERE `_run_id` IN (SELECT run_id FROM `acme__runs` WHERE table_name = 'users')) AS r
    WHERE `_run_id` = (SELECT run_id FROM `acme__runs` WHERE table_name = 'users' AND run_id NOT LIKE '%-hook%' ORDER BY extracted_at DESC, run_id DESC LIMIT 1)
       OR (`_source` = 'hook' AND NOT coalesce(`_received_at` <= (SELECT max(extracted_at) FROM `acme__runs` WHERE table_name = 'users' AND run_id NOT LIKE '%-hook%'), false))
  ) AS ranked
  WHERE capsule_rank = 1
)
SELECT latest.`id`, latest.`username`, latest.`name`, latest.`status`, latest.`locale`, latest.`currency`, latest.`timezone`, latest.`party`, latest.`lastLoginAt`, latest.`taskReminder`, latest.`emailPreference`, latest.`clickToCallPreference`, latest.`preferredEmailFromAddress`, latest.`deleted`, latest.`loggedIn`, latest.`pictureURL`, latest.`_run_id`, latest.`_extracted_at`, latest.`_event`, latest.`_received_at`, latest.`_source`, latest.`_deleted`, latest.`dt`
FROM latest
WHERE NOT coalesce(latest.`_deleted`, false);

CREATE OR REPLACE VIEW `acme_custom_fields_current` AS
WITH latest AS (
  SELECT * FROM (
    SELECT r.*, row_number() OVER (PARTITION BY `entity`, `id` ORDER BY `_extracted_at` DESC) AS capsule_rank
    FROM (SELECT * FROM `acme_custom_fields` WHERE `_run_id` IN (SELECT run_id FROM `acme__runs` WHERE table_name = 'custom_fields')) AS r
    WHERE `_run_id` = (SELECT run_id FROM `acme__runs` WHERE table_name = 'custom_fields' ORDER BY extracted_at DESC, run_id DESC LIMIT 1)
  ) AS ranked
  WHERE capsule_rank = 1
)
SELECT latest.`id`, latest.`name`, latest.`description`, latest.`type`, latest.`tag`, latest.`captureRule`, latest.`options`, latest.`important`, latest.`displayOrder`, latest.`entity`, latest.`_run_id`, latest.`_extracted_at`, latest.`dt`
FROM latest;

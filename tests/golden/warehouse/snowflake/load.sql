-- capsule-sync warehouse kit for Snowflake, integration `acme`, reading s3://capsule-bucket/exports.

-- Published manifests (not `.pending`, `.parents` or `.redshift`): the committed runs.
COPY INTO "acme__runs" (table_name, run_id, extracted_at, "rows", manifest, loaded_at)
FROM (SELECT $1:table::VARCHAR, $1:run_id::VARCHAR, $1:extracted_at::TIMESTAMP_TZ, $1:rows::NUMBER(38,0), METADATA$FILENAME, CURRENT_TIMESTAMP() FROM @"acme_stage"/_meta/acme/runs/)
PATTERN = '.*/runs/[^/]+/[a-z_]+[.]json';
COPY INTO "acme_parties" ("id", "name", "updatedAt", "tags", "_run_id", "_extracted_at", "_event", "_received_at", "_source", "_deleted", "dt", "_file")
FROM (SELECT $1:id::NUMBER(38,0), $1:name::VARCHAR, $1:updatedAt::TIMESTAMP_TZ, $1:tags, $1:_run_id::VARCHAR, $1:_extracted_at::TIMESTAMP_TZ, $1:_event::VARCHAR, $1:_received_at::TIMESTAMP_TZ, $1:_source::VARCHAR, $1:_deleted::BOOLEAN, TO_DATE(REGEXP_SUBSTR(METADATA$FILENAME, 'dt=([0-9-]+)', 1, 1, 'e')), METADATA$FILENAME FROM @"acme_stage"/acme/parties/)
PATTERN = '.*part-[0-9]+[.]ndjson([.]gz)?';
COPY INTO "acme_deleted_parties" ("id", "deletedAt", "_deleted", "_restricted", "_run_id", "_extracted_at", "dt", "_file")
FROM (SELECT $1:id::NUMBER(38,0), $1:deletedAt::TIMESTAMP_TZ, $1:_deleted::BOOLEAN, $1:_restricted::BOOLEAN, $1:_run_id::VARCHAR, $1:_extracted_at::TIMESTAMP_TZ, TO_DATE(REGEXP_SUBSTR(METADATA$FILENAME, 'dt=([0-9-]+)', 1, 1, 'e')), METADATA$FILENAME FROM @"acme_stage"/acme/deleted_parties/)
PATTERN = '.*part-[0-9]+[.]ndjson([.]gz)?';
COPY INTO "acme_users" ("id", "username", "name", "status", "locale", "currency", "timezone", "party", "lastLoginAt", "taskReminder", "emailPreference", "clickToCallPreference", "preferredEmailFromAddress", "deleted", "loggedIn", "pictureURL", "_run_id", "_extracted_at", "_event", "_received_at", "_source", "_deleted", "dt", "_file")
FROM (SELECT $1:id::NUMBER(38,0), $1:username::VARCHAR, $1:name::VARCHAR, $1:status::VARCHAR, $1:locale::VARCHAR, $1:currency::VARCHAR, $1:timezone::VARCHAR, $1:party, $1:lastLoginAt::TIMESTAMP_TZ, $1:taskReminder::BOOLEAN, $1:emailPreference::VARCHAR, $1:clickToCallPreference::VARCHAR, $1:preferredEmailFromAddress::VARCHAR, $1:deleted::BOOLEAN, $1:loggedIn::BOOLEAN, $1:pictureURL::VARCHAR, $1:_run_id::VARCHAR, $1:_extracted_at::TIMESTAMP_TZ, $1:_event::VARCHAR, $1:_received_at::TIMESTAMP_TZ, $1:_source::VARCHAR, $1:_deleted::BOOLEAN, TO_DATE(REGEXP_SUBSTR(METADATA$FILENAME, 'dt=([0-9-]+)', 1, 1, 'e')), METADATA$FILENAME FROM @"acme_stage"/acme/users/)
PATTERN = '.*part-[0-9]+[.]ndjson([.]gz)?';
COPY INTO "acme_custom_fields" ("id", "name", "description", "type", "tag", "captureRule", "options", "important", "displayOrder", "entity", "_run_id", "_extracted_at", "dt", "_file")
FROM (SELECT $1:id::NUMBER(38,0), $1:name::VARCHAR, $1:description::VARCHAR, $1:type::VARCHAR, $1:tag, $1:captureRule::VARCHAR, $1:options, $1:important::BOOLEAN, $1:displayOrder::NUMBER(38,0), $1:entity::VARCHAR, $1:_run_id::VARCHAR, $1:_extracted_at::TIMESTAMP_TZ, TO_DATE(REGEXP_SUBSTR(METADATA$FILENAME, 'dt=([0-9-]+)', 1, 1, 'e')), METADATA$FILENAME FROM @"acme_stage"/acme/custom_fields/)
PATTERN = '.*part-[0-9]+[.]ndjson([.]gz)?';

//! What only the AWS adapters do, against moto_server over HTTP (the real SDK, no mocks): S3
//! multipart uploads, the Secrets Manager secret formats and OAuth refresh. What every adapter
//! does is in `contracts.rs`.

use std::time::Duration;

use bytes::Bytes;
use capsule_aws::{S3Sink, SecretsManagerToken};
use capsule_core::integration::{Integration, TokenSource};
use capsule_core::ports::{ObjectSink, RunState, TokenProvider};
use capsule_sync_e2e::aws::*;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::json;

fn pseudo_random(n: usize) -> Vec<u8> {
    // Incompressible-ish bytes so part sizes are what they look like.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn s3_streams_large_objects_in_multipart_and_small_ones_in_one_put() {
    let stack = AwsStack::new().await;
    let sink = S3Sink::new(stack.clients.s3.clone(), &stack.bucket, "wh", None).with_part_bytes(5 << 20);
    let data = pseudo_random(12 << 20);
    let mut upload = sink.begin("acme/parties/part-00000.ndjson.gz").await.unwrap();
    for chunk in data.chunks(1 << 20) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let pending = stack.clients.s3.list_multipart_uploads().bucket(&stack.bucket).send().await.unwrap();
    assert_eq!(pending.uploads().len(), 1, "a multipart upload is under way before finish");
    assert!(sink.list("acme/").await.unwrap().is_empty(), "nothing visible before finish");
    upload.finish().await.unwrap();

    let key = "wh/acme/parties/part-00000.ndjson.gz";
    assert_eq!(stack.object(key).await, data);
    let head = stack.clients.s3.head_object().bucket(&stack.bucket).key(key).send().await.unwrap();
    assert!(head.e_tag().unwrap().contains("-3"), "three parts: {:?}", head.e_tag());
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("AES256"), "SSE requested explicitly");

    sink.put("_meta/acme/x.json", Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(sink.list("acme/").await.unwrap(), vec!["acme/parties/part-00000.ndjson.gz"]);
    assert_eq!(sink.locate("_meta/acme/x.json"), format!("s3://{}/wh/_meta/acme/x.json", stack.bucket));
    sink.delete("_meta/acme/x.json").await.unwrap();
    sink.delete("_meta/acme/never-existed.json").await.unwrap();
    assert_eq!(stack.keys().await, vec![key.to_string()]);
}

#[tokio::test]
async fn s3_abort_leaves_nothing_behind() {
    let stack = AwsStack::new().await;
    let sink = S3Sink::new(stack.clients.s3.clone(), &stack.bucket, "", None).with_part_bytes(5 << 20);
    let mut upload = sink.begin("acme/tasks/part-00000.ndjson.gz").await.unwrap();
    upload.write(Bytes::from(pseudo_random(6 << 20))).await.unwrap();
    upload.abort().await;
    let pending = stack.clients.s3.list_multipart_uploads().bucket(&stack.bucket).send().await.unwrap();
    assert!(pending.uploads().is_empty(), "the multipart upload was aborted");
    assert!(stack.keys().await.is_empty());

    let mut small = sink.begin("acme/tasks/part-00001.ndjson.gz").await.unwrap();
    small.write(Bytes::from_static(b"{\"id\":1}\n")).await.unwrap();
    small.abort().await;
    assert!(stack.keys().await.is_empty(), "a small object never started is not written either");
}

#[tokio::test]
async fn secrets_hold_a_personal_access_token() {
    let clients = moto_clients().await;
    let name = create_secret(&clients, json!({"token": " pat-123 "})).await;
    let provider = SecretsManagerToken::new(clients.secrets.clone(), name, capsule_oauth());
    assert_eq!(provider.token().await.unwrap().expose_secret(), "pat-123");
}

#[tokio::test]
async fn secrets_with_only_email_and_password_are_refused_with_what_to_do() {
    let clients = moto_clients().await;
    let name = create_secret(&clients, json!({"email": "me@example.com", "password": "hunter2"})).await;
    let err =
        SecretsManagerToken::new(clients.secrets.clone(), name.clone(), capsule_oauth()).token().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Bearer tokens") && message.contains("API Authentication Tokens"), "{message}");
    assert!(!message.contains("hunter2"), "the password never appears");
    assert_eq!(err.fault(), capsule_core::Fault::User);

    let other = create_secret(&clients, json!({"api_key": "abc"})).await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), other, capsule_oauth())
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_key") && !err.contains("abc"), "{err}");
    let missing = SecretsManagerToken::new(clients.secrets.clone(), "capsule-sync/missing".into(), capsule_oauth());
    let missing = missing.token().await;
    assert!(missing.unwrap_err().to_string().contains("capsule-sync/missing"));
}

#[tokio::test]
async fn oauth_secrets_refresh_and_write_the_rotated_refresh_token_back() {
    let clients = moto_clients().await;
    let endpoint = TokenEndpoint::start("access-new", "refresh-0").await;
    let name =
        create_secret(&clients, json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0"}))
            .await;
    let provider = SecretsManagerToken::new(clients.secrets.clone(), name.clone(), endpoint.url());
    assert_eq!(provider.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(provider.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the fresh token is cached");

    let stored = read_secret(&clients, &name).await;
    assert_eq!(stored["refresh_token"], "refresh-1", "the rotated refresh token was written back");
    assert_eq!(stored["access_token"], "access-new");
    assert_eq!(stored["client_secret"], "csecret");
    let expires = chrono::DateTime::parse_from_rfc3339(stored["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires > Utc::now() + chrono::Duration::days(6));

    // Another process (a cold start) uses the stored access token without refreshing.
    let cold = SecretsManagerToken::new(clients.secrets.clone(), name.clone(), endpoint.url());
    assert_eq!(cold.token().await.unwrap().expose_secret(), "access-new");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A revoked refresh token: a clear error, nothing overwritten.
    let revoked =
        create_secret(&clients, json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "stale"}))
            .await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), revoked.clone(), endpoint.url())
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && err.contains("re-authorise"), "{err}");
    assert_eq!(read_secret(&clients, &revoked).await["refresh_token"], "stale");

    // A token URL in the secret is not where the client secret goes: refused, nothing sent.
    let calls = endpoint.calls.load(std::sync::atomic::Ordering::SeqCst);
    let redirected = create_secret(
        &clients,
        json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0",
               "token_url": "https://collector.example/oauth/token"}),
    )
    .await;
    let err = SecretsManagerToken::new(clients.secrets.clone(), redirected, endpoint.url())
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("collector.example") && err.contains("CAPSULE_OAUTH_TOKEN_URL"), "{err}");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), calls, "no refresh was attempted");
}

/// An OAuth access token that expires during a run (Capsule starts refusing it with 401) is
/// refreshed through its secret and the run goes on: one refresh, nothing lost.
#[tokio::test]
async fn an_oauth_token_expiring_mid_run_is_refreshed_and_the_run_goes_on() {
    use capsule_client::CapsuleClient;
    use capsule_core::budget::RateBudgetStore;
    use capsule_engine::engine::RunOptions;
    use capsule_sync_e2e::{Local, expected_counts, fast_client_options, slow_pages, start_sim};
    use std::sync::Arc;

    let clients = moto_clients().await;
    let sim = start_sim(600, |c| c.token = "access-old".into()).await;
    sim.add_fault(slow_pages("/entries", 200));
    let endpoint = TokenEndpoint::start("access-new", "refresh-0").await;
    let secret = json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0",
                        "access_token": "access-old",
                        "expires_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339()});
    let name = create_secret(&clients, secret).await;
    let mut integration =
        Integration::new("acme".parse().unwrap(), TokenSource::SecretsManager { secret_id: name.clone() }, Utc::now());
    integration.api_base_url = sim.base_url().to_string();
    let local = Local::new();
    let tokens: Arc<dyn TokenProvider> =
        Arc::new(SecretsManagerToken::new(clients.secrets.clone(), name.clone(), endpoint.url()));
    let store: Arc<dyn RateBudgetStore> = Arc::new(local.state.clone());
    let client = CapsuleClient::for_integration(&integration, tokens, store, fast_client_options()).await.unwrap();

    let expire_mid_run = async {
        while sim.stats().count("GET /entries") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.set_token("access-new"); // Capsule no longer accepts the old access token
    };
    let ((_, outcomes), ()) =
        tokio::join!(local.sync(&client, &integration, &["entries"], RunOptions::default()), expire_mid_run);
    let outcome = &outcomes[0];
    assert_eq!(outcome.record.state, RunState::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.record.rows as usize, expected_counts(&sim)["entries"], "nothing lost");
    assert!(outcome.record.requests.requests > 2, "the token expired part way through the run");
    assert_eq!(sim.stats().by_status.get(&401).copied(), Some(1), "one refused request, then the new token");
    assert_eq!(endpoint.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "refreshed once");
    let stored = read_secret(&clients, &name).await;
    assert_eq!(
        (stored["access_token"].as_str(), stored["refresh_token"].as_str()),
        (Some("access-new"), Some("refresh-1"))
    );
}

/// History does not grow forever: run and dispatch items carry a DynamoDB TTL (their end plus
/// the retention; dispatches at least a month past the longest frequency). Integrations are
/// listed from a registry partition (a query), and ones written before it existed are found
/// once by a scan and registered.
#[tokio::test]
async fn dynamodb_history_expires_and_integrations_are_listed_without_a_scan() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use capsule_aws::DynamoState;
    use capsule_core::ports::{DispatchRecord, StateStore, TableRunRecord};

    let stack = AwsStack::new().await;
    let day = Duration::from_secs(24 * 3600);
    let state = DynamoState::new(stack.clients.dynamodb.clone(), &stack.table).with_history(day * 7);
    let run: capsule_core::integration::RunId = "20261128T080000Z-aaaaaa".parse().unwrap();
    let mut record = TableRunRecord::new("acme", "parties", &run, RunState::Succeeded, Utc::now());
    record.finished_at = Some(Utc::now());
    state.record_run(&record).await.unwrap();
    let dispatched_at = Utc::now();
    let dispatch = DispatchRecord {
        integration: "acme".into(),
        run_id: run.clone(),
        tables: vec![],
        dispatched_at,
        failed: vec![],
        held: vec![],
        started_by: capsule_core::ports::StartedBy::Schedule,
    };
    state.record_dispatch(&dispatch).await.unwrap();
    let items = stack.clients.dynamodb.scan().table_name(&stack.table).send().await.unwrap();
    let ttl_of = |prefix: &str| -> i64 {
        let item = items.items().iter().find(|i| i["sk"].as_s().unwrap().starts_with(prefix)).unwrap();
        item["ttl"].as_n().unwrap().parse().unwrap()
    };
    let finished = record.finished_at.unwrap().timestamp();
    assert_eq!(ttl_of("RUN#"), finished + 7 * 86_400, "runs: the retention");
    assert_eq!(ttl_of("DISPATCH#"), dispatched_at.timestamp() + 32 * 86_400, "dispatches: at least 32 days");

    // A legacy integration item (no registry entry) is listed, then registered.
    let legacy = Integration::new("legacy".parse().unwrap(), TokenSource::Env { var: "X".into() }, Utc::now());
    let doc = serde_json::to_string(&legacy).unwrap();
    stack
        .clients
        .dynamodb
        .put_item()
        .table_name(&stack.table)
        .item("pk", AttributeValue::S("INT#legacy".into()))
        .item("sk", AttributeValue::S("INTEGRATION".into()))
        .item("doc", AttributeValue::S(doc))
        .send()
        .await
        .unwrap();
    let names = |list: Vec<Integration>| list.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(names(state.list_integrations().await.unwrap()), ["legacy"]);
    let registry = stack
        .clients
        .dynamodb
        .query()
        .table_name(&stack.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("INTEGRATIONS".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(registry.items().len(), 1, "registered by the listing");

    state
        .create_integration(&Integration::new(
            "acme".parse().unwrap(),
            TokenSource::Env { var: "X".into() },
            Utc::now(),
        ))
        .await
        .unwrap();
    assert_eq!(names(state.list_integrations().await.unwrap()), ["acme", "legacy"]);
    assert!(state.delete_integration("acme").await.unwrap());
    assert_eq!(names(state.list_integrations().await.unwrap()), ["legacy"], "delete unregisters");
}

/// Every document item records the schema version it was written with; an item a newer
/// capsule-sync wrote is refused with an error naming its key, never half-read.
#[tokio::test]
async fn document_items_carry_their_schema_version_and_a_newer_one_is_refused() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use capsule_core::ports::StateStore;
    use capsule_core::stored::SCHEMA_VERSION;
    let stack = AwsStack::new().await;
    let acme = Integration::new("acme".parse().unwrap(), TokenSource::Env { var: "X".into() }, Utc::now());
    stack.state.create_integration(&acme).await.unwrap();
    let key = |pk: &str| {
        [("pk".to_string(), AttributeValue::S(pk.into())), ("sk".to_string(), AttributeValue::S("INTEGRATION".into()))]
    };
    let item = stack.clients.dynamodb.get_item().table_name(&stack.table).set_key(Some(key("INT#acme").into()));
    let item = item.send().await.unwrap().item.unwrap();
    assert_eq!(item["schema"].as_n().unwrap(), &SCHEMA_VERSION.to_string());

    let mut newer = item.clone();
    newer.insert("schema".into(), AttributeValue::N((SCHEMA_VERSION + 1).to_string()));
    stack.clients.dynamodb.put_item().table_name(&stack.table).set_item(Some(newer)).send().await.unwrap();
    let err = stack.state.get_integration("acme").await.unwrap_err().to_string();
    assert!(err.contains("INT#acme/INTEGRATION") && err.contains("newer capsule-sync"), "{err}");
}

/// Integrations registered before the due index existed have no entry: the first query of the
/// index gives each one (due now), once per table, and marks the table so.
#[tokio::test]
async fn the_due_index_is_built_once_for_integrations_registered_before_it() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use capsule_core::ports::StateStore;
    let stack = AwsStack::new().await;
    for name in ["acme", "beta"] {
        let token = TokenSource::Env { var: "X".into() };
        stack.state.create_integration(&Integration::new(name.parse().unwrap(), token, Utc::now())).await.unwrap();
        // As an older version registered it: no entry in the index.
        let key = |v: &str| AttributeValue::S(v.into());
        let delete = stack.clients.dynamodb.delete_item().table_name(&stack.table);
        delete.key("pk", key(&format!("DUE#{name}"))).key("sk", key("WAKE")).send().await.unwrap();
    }
    let upgraded = capsule_aws::DynamoState::new(stack.clients.dynamodb.clone(), &stack.table);
    assert!(upgraded.wake("acme").await.unwrap().is_none());
    let due: Vec<String> = upgraded.due(Utc::now(), 10).await.unwrap().into_iter().map(|w| w.integration).collect();
    assert_eq!(due, vec!["acme", "beta"], "both due at once after the upgrade");
    let marker = stack.clients.dynamodb.get_item().table_name(&stack.table);
    let marker = marker.key("pk", AttributeValue::S("DUE#".into())).key("sk", AttributeValue::S("BUILT".into()));
    assert!(marker.send().await.unwrap().item.is_some(), "built once: the table is marked");
}

//! IAM proven by evaluation. The serverless path syncs all 22 tables (continuations, held
//! tables, a second incremental run) with each function's AWS calls recorded on their way to
//! moto; every call becomes the IAM requests AWS would authorise (action, resource ARN,
//! `dynamodb:LeadingKeys`, `s3:prefix`), judged by a real policy evaluator
//! (`@cloud-copilot/iam-simulate`, tests/src/iam/evaluator.rs) against the role policies of
//! template.yaml resolved for the stack. Every recorded call must be allowed; calls the functions
//! must never be able to make must be denied; and a template with a grant or a condition value
//! removed must fail. Once with the default parameters, once with another `OutputPrefix`,
//! `SecretPrefix` and an `OutputKmsKeyArn`.

use std::collections::BTreeMap;
use std::time::Duration;

use capsule_sync_e2e::aws::TokenEndpoint;
use capsule_sync_e2e::capsule_sim::{MutationKind, MutationOp};
use capsule_sync_e2e::iam::{Decision, Deployment, IamRequest, Policies, Resolved, Stack, evaluate};
use capsule_sync_e2e::serverless::{Setup, World, tick_until_done, world_with};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const STACK: &str = "capsule-sync-iam";
const KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap()
}

fn scheduled_tick() -> Value {
    json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
}

/// The stack the world stands for: its parameters, and its resources as the world named them.
fn stack_of(w: &World, kms_key: Option<&str>) -> Stack {
    let function = |role: &str| format!("{STACK}-{role}");
    let function_arn = |role: &str| format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}", function(role));
    let log_group = |role: &str| format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{}:*", function(role));
    let attributes = [
        ("StateTable", format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", w.stack.table)),
        ("OutputBucket", format!("arn:aws:s3:::{}", w.stack.bucket)),
        ("OrchestratorFunction", function_arn("orchestrator")),
        ("TableSyncFunction", function_arn("table-sync")),
        ("FailureQueue", format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-FailureQueue-1A2B3C")),
        ("OrchestratorLogGroup", log_group("orchestrator")),
        ("TableSyncLogGroup", log_group("table-sync")),
        ("HookReceiverLogGroup", log_group("hook-receiver")),
    ];
    Stack {
        name: STACK.into(),
        account: ACCOUNT.into(),
        region: REGION.into(),
        parameters: BTreeMap::from([
            ("OutputPrefix".into(), w.prefix.clone()),
            ("SecretPrefix".into(), w.secret_prefix.clone()),
            ("OutputKmsKeyArn".into(), kms_key.unwrap_or_default().into()),
        ]),
        refs: BTreeMap::from([
            ("StateTable".into(), w.stack.table.clone()),
            ("OutputBucket".into(), w.stack.bucket.clone()),
            ("OrchestratorFunction".into(), function("orchestrator")),
            ("TableSyncFunction".into(), function("table-sync")),
        ]),
        attributes: attributes.into_iter().map(|(r, v)| ((r.to_string(), "Arn".to_string()), v)).collect(),
    }
}

/// Each function's role policies and the bucket's policy, from `template` resolved for `stack`.
fn policies(template: &str, stack: &Stack) -> Result<Policies, String> {
    let resolved = Resolved::new(template, stack)?;
    let role = |name: &str| format!("arn:aws:iam::{ACCOUNT}:role/{STACK}-{name}-0123456789AB");
    Ok(Policies {
        roles: BTreeMap::from([
            ("orchestrator".into(), (role("OrchestratorRole"), resolved.role_policies("OrchestratorRole")?)),
            ("table-sync".into(), (role("TableSyncRole"), resolved.role_policies("TableSyncRole")?)),
            ("hook-receiver".into(), (role("HookReceiverRole"), resolved.role_policies("HookReceiverRole")?)),
        ]),
        resources: vec![
            (
                stack.attributes[&("OutputBucket".to_string(), "Arn".to_string())].clone(),
                resolved.resource_policy("OutputBucketPolicy")?,
            ),
            // KMS honours an identity policy only where the key's policy lets IAM decide, as
            // the default key policy does (README: the key policy must allow table-sync's role).
            (
                KMS_KEY.into(),
                json!({"Version": "2012-10-17", "Statement": [{
                    "Sid": "Enable IAM User Permissions", "Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
                    "Action": "kms:*", "Resource": "*"
                }]}),
            ),
        ],
    })
}

fn deployment(kms_key: Option<&str>) -> Deployment {
    Deployment {
        account: ACCOUNT.into(),
        region: REGION.into(),
        functions: ["orchestrator", "table-sync", "hook-receiver"]
            .map(|f| (f.to_string(), format!("{STACK}-{f}")))
            .into(),
        kms_key: kms_key.map(String::from),
    }
}

/// A full first sync with continuations, then changes and a forced incremental run, recorded.
async fn recorded_sync(setup: Setup) -> World {
    let w = world_with(Setup { record_calls: true, remaining: Duration::from_secs(2), ..setup }).await;
    let summary = w.invoke("orchestrator", scheduled_tick()).await;
    let run = summary["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    tick_until_done(&w, &run, 22, Duration::from_secs(180)).await;
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Update, 20).unwrap();
    w.sim.mutate_n(MutationKind::Parties, MutationOp::Delete, 3).unwrap();
    let forced = w.invoke("orchestrator", json!({"integration": "acme", "force": true})).await;
    let run = forced["dispatched"][0]["run_id"].as_str().unwrap().to_string();
    tick_until_done(&w, &run, 22, Duration::from_secs(180)).await;
    // REST hooks through the receiver's URL: its calls are recorded too.
    let app = capsule_sync_e2e::client_for(&w.sim, &w.sim.token());
    let hooked: Vec<String> = ["parties", "opportunities", "cases", "tasks"].map(String::from).into();
    capsule_engine::hooks::subscriptions::subscribe(&app, &w.stack.state, "acme", &w.hook_url, &hooked).await.unwrap();
    capsule_sync_e2e::hooks::change_the_account(&w.sim);
    let landed = async {
        // One batched delivery per change (nine), each to the hook of its event.
        while w.sim.hook_stats().delivered < 9 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), landed).await.expect("deliveries answered 2xx");
    w.lambda.wait_idle().await;
    assert!(w.lambda.errors().is_empty(), "{:?}", w.lambda.errors());
    w
}

/// The IAM requests of every call the functions made, plus what Lambda does with each
/// function's role on its behalf (its log stream; table-sync's failed events to the queue).
fn requests_of(w: &World, deployment: &Deployment, stack: &Stack) -> Vec<IamRequest> {
    let calls = w.recorder.as_ref().expect("recorded").log.calls();
    let mut requests = Vec::new();
    for call in calls.iter().filter(|c| ["orchestrator", "table-sync", "hook-receiver"].contains(&c.principal.as_str()))
    {
        requests.extend(deployment.requests(call).unwrap_or_else(|e| panic!("{} made a call: {e}", call.principal)));
    }
    for function in ["orchestrator", "table-sync", "hook-receiver"] {
        let group = format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{STACK}-{function}");
        let stream = format!("{group}:log-stream:2026/12/07/[$LATEST]0123456789abcdef");
        for action in ["logs:CreateLogStream", "logs:PutLogEvents"] {
            requests.push(IamRequest::new(function, action, &stream, "the Lambda runtime's logs"));
        }
    }
    let queue = &stack.attributes[&("FailureQueue".to_string(), "Arn".to_string())];
    requests.push(IamRequest::new("table-sync", "sqs:SendMessage", queue, "Lambda's on-failure destination"));
    requests
}

/// Calls neither function may ever make.
fn forbidden(w: &World, deployment: &Deployment) -> Vec<IamRequest> {
    let table = deployment.table_arn(&w.stack.table);
    let object = |key: &str| format!("arn:aws:s3:::{}/{key}", w.stack.bucket);
    let keys = |pk: &str| json!([pk]);
    let ts = "table-sync";
    let orch = "orchestrator";
    let hr = "hook-receiver";
    vec![
        IamRequest::new(
            hr,
            "secretsmanager:GetSecretValue",
            &deployment.secret_arn(&format!("{}acme", w.secret_prefix)),
            "a Capsule token",
        ),
        IamRequest::new(hr, "s3:GetObject", &object(&format!("{}/acme/parties/x", w.prefix)), "reading CRM data")
            .with("aws:SecureTransport", json!("true")),
        IamRequest::new(hr, "s3:DeleteObject", &object(&format!("{}/acme/parties/x", w.prefix)), "removing output"),
        IamRequest::new(hr, "s3:PutObject", &object("other/acme/parties/x.ndjson.gz"), "another prefix of the bucket"),
        IamRequest::new(hr, "dynamodb:PutItem", &table, "an integration")
            .with("dynamodb:LeadingKeys", keys("INT#acme")),
        IamRequest::new(hr, "dynamodb:GetItem", &table, "a rate budget").with("dynamodb:LeadingKeys", keys("BUDGET#k")),
        IamRequest::new(hr, "dynamodb:Scan", &table, "every integration"),
        IamRequest::new(hr, "lambda:InvokeFunction", &deployment.function_arn("table-sync"), "starting a sync"),
        IamRequest::new(
            ts,
            "secretsmanager:GetSecretValue",
            &deployment.secret_arn("other-team/acme"),
            "another prefix's secret",
        ),
        IamRequest::new(
            ts,
            "secretsmanager:GetSecretValue",
            &deployment.secret_arn("prod/database"),
            "a secret outside the prefix",
        ),
        IamRequest::new(ts, "s3:PutObject", &object("other/acme/parties/x.ndjson.gz"), "another prefix of the bucket"),
        IamRequest::new(ts, "s3:GetObject", &object("other/_meta/x.json"), "another prefix of the bucket"),
        IamRequest::new(ts, "s3:ListBucket", &format!("arn:aws:s3:::{}", w.stack.bucket), "listing another prefix")
            .with("s3:prefix", json!("other/")),
        IamRequest::new(ts, "s3:GetObject", "arn:aws:s3:::another-bucket/capsule/x", "another bucket"),
        IamRequest::new(ts, "dynamodb:PutItem", &table, "a dispatch record")
            .with("dynamodb:LeadingKeys", keys("DISPATCH#acme")),
        IamRequest::new(ts, "dynamodb:PutItem", &table, "a key outside INT#/BUDGET#")
            .with("dynamodb:LeadingKeys", keys("REGISTRY")),
        IamRequest::new(ts, "dynamodb:Scan", &table, "a scan of every integration"),
        IamRequest::new(ts, "dynamodb:DeleteTable", &table, "the table itself"),
        IamRequest::new(ts, "lambda:InvokeFunction", &deployment.function_arn("orchestrator"), "the orchestrator"),
        IamRequest::new(orch, "dynamodb:PutItem", &table, "run state").with("dynamodb:LeadingKeys", keys("INT#acme")),
        IamRequest::new(orch, "dynamodb:UpdateItem", &table, "run state")
            .with("dynamodb:LeadingKeys", keys("INT#acme")),
        IamRequest::new(orch, "dynamodb:DeleteItem", &table, "a bookmark")
            .with("dynamodb:LeadingKeys", keys("INT#acme")),
        IamRequest::new(orch, "dynamodb:PutItem", &table, "a rate budget")
            .with("dynamodb:LeadingKeys", keys("BUDGET#k")),
        IamRequest::new(
            orch,
            "secretsmanager:GetSecretValue",
            &deployment.secret_arn(&format!("{}acme", w.secret_prefix)),
            "a token",
        ),
        IamRequest::new(orch, "s3:GetObject", &object(&format!("{}/acme/parties/x", w.prefix)), "CRM data")
            .with("aws:SecureTransport", json!("true")),
        IamRequest::new(orch, "kms:Decrypt", KMS_KEY, "the output key"),
        IamRequest::new(
            ts,
            "kms:Decrypt",
            "arn:aws:kms:us-east-1:123456789012:key/ffffffff-0000-0000-0000-000000000000",
            "another key",
        ),
    ]
}

/// What was not allowed, as readable lines.
fn refused(requests: &[IamRequest], decisions: &[Decision]) -> Vec<String> {
    requests
        .iter()
        .zip(decisions)
        .filter(|(_, d)| **d != Decision::Allowed)
        .map(|(r, d)| format!("{} {} on {} {:?} ({}): {d:?}", r.function, r.action, r.resource, r.context, r.call))
        .collect()
}

/// Distinct (function, action) with counts: what the closing note and README list.
fn summary(requests: &[IamRequest]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts.entry((r.function.clone(), r.action.clone())).or_insert(0) += 1;
    }
    counts
}

fn assert_allowed_and_forbidden_denied(w: &World, kms_key: Option<&str>) -> Vec<IamRequest> {
    let (deployment, stack) = (deployment(kms_key), stack_of(w, kms_key));
    let policies = policies(&template(), &stack).unwrap();
    let requests = requests_of(w, &deployment, &stack);
    let denied = refused(&requests, &evaluate(&policies, &requests));
    assert!(denied.is_empty(), "calls the functions make that IAM would refuse:\n{}", denied.join("\n"));

    let forbidden = forbidden(w, &deployment);
    let decisions = evaluate(&policies, &forbidden);
    for (request, decision) in forbidden.iter().zip(&decisions) {
        assert!(
            matches!(decision, Decision::Denied(_)),
            "{} must not be able to {} on {} ({}): {decision:?}",
            request.function,
            request.action,
            request.resource,
            request.call
        );
    }
    for ((function, action), n) in summary(&requests) {
        println!("{function:<13} {action:<36} {n}");
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_the_functions_make_is_allowed_and_nothing_else_with_default_parameters() {
    let setup = Setup {
        output_prefix: "capsule".into(),
        secret_prefix: Some(capsule_client::access::DEFAULT_SECRET_PREFIX.into()),
        ..Setup::new(400)
    };
    let w = recorded_sync(setup).await;
    let requests = assert_allowed_and_forbidden_denied(&w, None);
    let actions: Vec<&str> = requests.iter().map(|r| r.action.as_str()).collect();
    for needed in [
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
        "lambda:InvokeFunction",
    ] {
        assert!(actions.contains(&needed), "the sync made no {needed} call: the recording missed something");
    }
    for needed in ["dynamodb:GetItem", "s3:PutObject"] {
        let made = requests.iter().any(|r| r.function == "hook-receiver" && r.action == needed);
        assert!(made, "the hook receiver made no {needed} call: the recording missed something");
    }

    // A template missing a grant or a condition value fails, each on the calls that need it.
    let text = template();
    let mutations = [
        ("TableSyncRole without UpdateItem", "                  - dynamodb:UpdateItem\n", "", "dynamodb:UpdateItem"),
        ("budgets outside LeadingKeys", "                      - \"BUDGET#*\"\n", "", "BUDGET#"),
        ("the orchestrator's dispatch partition misspelt", "\"DISPATCH#*\"", "\"DISPATCHES#*\"", "DISPATCH#"),
        (
            "no GetSecretValue",
            "                  - secretsmanager:GetSecretValue\n",
            "",
            "secretsmanager:GetSecretValue",
        ),
        (
            "PutObject outside the prefix",
            "!Sub \"${OutputBucket.Arn}/${OutputPrefix}/*\"",
            "!Sub \"${OutputBucket.Arn}/${OutputPrefix}/data/*\"",
            "s3:PutObject",
        ),
        (
            "continuations to another function",
            "function:${AWS::StackName}-table-sync\"",
            "function:${AWS::StackName}-sync\"",
            "lambda:InvokeFunction",
        ),
        (
            "ListBucket granted on objects",
            "                Action: s3:ListBucket\n                Resource: !GetAtt OutputBucket.Arn",
            "                Action: s3:ListBucket\n                Resource: !Sub \"${OutputBucket.Arn}/*\"",
            "s3:ListBucket",
        ),
    ];
    let (deployment, stack) = (deployment(None), stack_of(&w, None));
    let requests = requests_of(&w, &deployment, &stack);
    for (what, from, to, caught) in mutations {
        assert!(text.contains(from), "{what}: the template no longer has {from:?}");
        let mutated = text.replacen(from, to, 1);
        let policies = policies(&mutated, &stack).unwrap();
        let denied = refused(&requests, &evaluate(&policies, &requests));
        assert!(
            denied.iter().any(|d| d.contains(caught)),
            "{what}: the recorded calls still all pass ({} refused: {denied:#?})",
            denied.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_is_allowed_with_another_prefix_secret_prefix_a_kms_key_and_oauth() {
    // An OAuth token: refreshed at first use and written back to the secret (PutSecretValue).
    let endpoint = TokenEndpoint::start("test-token", "refresh-0").await;
    let setup = Setup {
        output_prefix: "exports/crm".into(),
        secret_prefix: Some("team-b/capsule/".into()),
        kms_key: Some(KMS_KEY.into()),
        secret: json!({"client_id": "cid", "client_secret": "csecret", "refresh_token": "refresh-0"}),
        oauth_token_url: Some(endpoint.url()),
        ..Setup::new(300)
    };
    let w = recorded_sync(setup).await;
    let requests = assert_allowed_and_forbidden_denied(&w, Some(KMS_KEY));
    assert!(requests.iter().any(|r| r.action == "kms:GenerateDataKey"), "outputs were written with the key");
    assert!(
        requests.iter().any(|r| r.action == "secretsmanager:PutSecretValue"),
        "the refreshed token was written back"
    );
    assert!(
        requests.iter().all(|r| !r.action.starts_with("s3:PutObject") || r.resource.contains("/exports/crm/")),
        "every object written lies under the prefix"
    );
}

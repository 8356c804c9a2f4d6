//! The checks `doctor` makes, each a [`Finding`] with the fix in the words of the commands an
//! operator runs.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use capsule_aws::{AwsClients, DynamoState, sdk_config};
use capsule_client::access::AccessPolicy;
use capsule_core::integration::{Integration, TokenSource};
use capsule_core::ports::StateStore;
use serde_json::Value;

use super::Finding;
use super::policy::{self, Verdict};

/// The operator's clients and what the checks learn on the way.
pub struct Doctor {
    stack: String,
    pub(super) aws: AwsClients,
    iam: aws_sdk_iam::Client,
    scheduler: aws_sdk_scheduler::Client,
    pub(super) findings: Vec<Finding>,
}

/// A deployed function as `GetFunctionConfiguration` shows it.
pub(super) struct Function {
    pub(super) name: String,
    arn: String,
    role: String,
    env: HashMap<String, String>,
}

pub(super) fn wrong(problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding::Wrong { problem: problem.into(), fix: fix.into() }
}

/// An SDK error as its service's code and message.
fn said<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> String {
    match e.as_service_error().and_then(|se| se.code().map(|code| (code, se.message()))) {
        Some((code, message)) => format!("{code}: {}", message.unwrap_or_default()),
        None => format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e)),
    }
}

impl Doctor {
    pub async fn new(stack: &str) -> Doctor {
        let config = sdk_config().await;
        Doctor {
            stack: stack.to_string(),
            aws: AwsClients::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            scheduler: aws_sdk_scheduler::Client::new(&config),
            findings: Vec::new(),
        }
    }

    pub async fn run(mut self) -> Vec<Finding> {
        let orchestrator = self.function("orchestrator").await;
        let Some(table_sync) = self.function("table-sync").await else { return self.findings };
        if let Some(orchestrator) = &orchestrator {
            self.dispatch_target(orchestrator, &table_sync);
            self.schedule(orchestrator).await;
        }
        let setting = |name: &str| table_sync.env.get(name).cloned();
        let (Some(table), Some(bucket)) = (setting("CAPSULE_STATE_TABLE"), setting("CAPSULE_BUCKET")) else {
            self.findings.push(wrong(
                format!("{} has no CAPSULE_STATE_TABLE or CAPSULE_BUCKET in its environment", table_sync.name),
                "deploy the stack again from template.yaml (sam deploy): the template sets both",
            ));
            return self.findings;
        };
        self.bucket(&bucket).await;
        if !self.table(&table).await {
            return self.findings;
        }
        let access = match AccessPolicy::aws_from(&setting) {
            Ok(access) => access,
            Err(e) => {
                self.findings.push(wrong(
                    format!("{}'s settings: {e}", table_sync.name),
                    "correct the stack parameter and deploy again",
                ));
                return self.findings;
            }
        };
        let receiver = self.hook_receiver_url().await;
        let role_policies = self.role_policies(&table_sync.role).await;
        let state = DynamoState::new(self.aws.dynamodb.clone(), &table);
        match state.list_integrations().await {
            Ok(integrations) if integrations.is_empty() => self.findings.push(Finding::Fine(format!(
                "state table {table}: no integrations yet (capsule-sync --backend aws integrations create NAME --token secretsmanager:...)"
            ))),
            Ok(integrations) => {
                for integration in &integrations {
                    self.integration(integration, &access, &table_sync, &role_policies).await;
                    self.integration_hooks(integration, receiver.as_deref());
                }
            }
            Err(e) => self.findings.push(wrong(
                format!("cannot list the integrations in {table}: {e}"),
                "run doctor with credentials that may read the state table (dynamodb:Scan, dynamodb:Query)",
            )),
        }
        self.findings
    }

    pub(super) async fn function(&mut self, role: &str) -> Option<Function> {
        let name = format!("{}-{role}", self.stack);
        match self.aws.lambda.get_function_configuration().function_name(&name).send().await {
            Ok(config) => {
                self.findings.push(Finding::Fine(format!("function {name}")));
                Some(Function {
                    name,
                    arn: config.function_arn().unwrap_or_default().to_string(),
                    role: config.role().unwrap_or_default().to_string(),
                    env: config.environment().and_then(|e| e.variables()).cloned().unwrap_or_default(),
                })
            }
            Err(e) => {
                self.findings.push(wrong(
                    format!("function {name}: {}", said(&e)),
                    format!(
                        "deploy the stack (sam deploy --stack-name {}), or pass the name it was deployed as with --stack",
                        self.stack
                    ),
                ));
                None
            }
        }
    }

    fn dispatch_target(&mut self, orchestrator: &Function, table_sync: &Function) {
        match orchestrator.env.get("CAPSULE_TABLE_SYNC_FUNCTION") {
            Some(target) if *target == table_sync.name || *target == table_sync.arn => {
                self.findings.push(Finding::Fine(format!("{} dispatches to {target}", orchestrator.name)))
            }
            other => self.findings.push(wrong(
                format!(
                    "{} dispatches to {}, not {}",
                    orchestrator.name,
                    other.map_or("nothing (CAPSULE_TABLE_SYNC_FUNCTION is unset)", String::as_str),
                    table_sync.name
                ),
                "deploy the stack again from template.yaml: the template wires the orchestrator to its own table-sync",
            )),
        }
    }

    async fn schedule(&mut self, orchestrator: &Function) {
        let name = format!("{}-tick", self.stack);
        let finding = match self.scheduler.get_schedule().name(&name).send().await {
            Ok(s) if s.state().map(|s| s.as_str()) == Some("DISABLED") => wrong(
                format!("schedule {name} is disabled: nothing syncs on its own"),
                format!("aws scheduler update-schedule --name {name} --state ENABLED (with its expression and target)"),
            ),
            Ok(s) if s.target().map(|t| t.arn()) != Some(orchestrator.arn.as_str()) => wrong(
                format!(
                    "schedule {name} starts {}, not {}",
                    s.target().map_or("nothing", |t| t.arn()),
                    orchestrator.arn
                ),
                "deploy the stack again from template.yaml",
            ),
            Ok(s) => Finding::Fine(format!(
                "schedule {name}: {} starts {}",
                s.schedule_expression().unwrap_or_default(),
                orchestrator.name
            )),
            Err(e) => wrong(
                format!("schedule {name}: {}", said(&e)),
                "deploy the stack again from template.yaml (its ScheduleV2 event creates it)",
            ),
        };
        self.findings.push(finding);
    }

    async fn bucket(&mut self, bucket: &str) {
        let finding = match self.aws.s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => Finding::Fine(format!("bucket {bucket}")),
            Err(e) => wrong(
                format!("bucket {bucket}: {}", said(&e)),
                "the stack's OutputBucket is retained on delete: recreate the stack, or restore the bucket",
            ),
        };
        self.findings.push(finding);
    }

    async fn table(&mut self, table: &str) -> bool {
        let (finding, found) = match self.aws.dynamodb.describe_table().table_name(table).send().await {
            Ok(out) => {
                let keys: Vec<String> = out
                    .table()
                    .map(|t| {
                        t.key_schema().iter().map(|k| format!("{} {}", k.attribute_name(), k.key_type())).collect()
                    })
                    .unwrap_or_default();
                let due_index = out
                    .table()
                    .is_some_and(|t| t.global_secondary_indexes().iter().any(|i| i.index_name() == Some("due")));
                if keys == ["pk HASH", "sk RANGE"] && !due_index {
                    let problem = format!("state table {table} has no `due` index: every tick would find nothing due");
                    (wrong(problem, "deploy this version's template.yaml (`sam deploy`): it adds the index"), true)
                } else if keys == ["pk HASH", "sk RANGE"] {
                    (Finding::Fine(format!("state table {table}")), true)
                } else {
                    let problem = format!("state table {table} has keys {keys:?}, not pk (hash) and sk (range)");
                    (wrong(problem, "point the stack at the table template.yaml creates"), false)
                }
            }
            Err(e) => (
                wrong(
                    format!("state table {table}: {}", said(&e)),
                    "the stack's StateTable is retained on delete: recreate the stack, or restore the table",
                ),
                false,
            ),
        };
        self.findings.push(finding);
        found
    }

    /// table-sync's inline policies, read with the operator's credentials (empty if unreadable).
    async fn role_policies(&mut self, role_arn: &str) -> Vec<Value> {
        let role = role_arn.rsplit('/').next().unwrap_or(role_arn);
        let Ok(names) = self.iam.list_role_policies().role_name(role).send().await else { return Vec::new() };
        let mut documents = Vec::new();
        for name in names.policy_names() {
            if let Ok(out) = self.iam.get_role_policy().role_name(role).policy_name(name).send().await {
                let text = out.policy_document();
                // IAM answers the document URL-encoded.
                let decoded = if text.trim_start().starts_with('{') {
                    text.to_string()
                } else {
                    url::form_urlencoded::parse(format!("d={}", text.replace('+', "%2B")).as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                if let Ok(document) = serde_json::from_str(&decoded) {
                    documents.push(document);
                }
            }
        }
        documents
    }

    async fn integration(
        &mut self,
        integration: &Integration,
        access: &AccessPolicy,
        table_sync: &Function,
        policies: &[Value],
    ) {
        let name = &integration.name;
        if let Err(e) = access.check_api_url(&integration.api_base_url) {
            self.findings.push(wrong(
                format!("integration {name}: {e}"),
                format!(
                    "add {} to the stack's AllowedApiUrls parameter (sam deploy --parameter-overrides AllowedApiUrls=...), \
                     or capsule-sync --backend aws integrations edit {name} --api-base-url https://api.capsulecrm.com/api/v2",
                    integration.api_base_url
                ),
            ));
        }
        if let Err(e) = access.check_token_source(integration) {
            let own = match &access.tokens {
                capsule_client::access::TokenRule::OwnSecret { prefix, .. } => format!("{prefix}{name}"),
                capsule_client::access::TokenRule::Local => name.to_string(),
            };
            self.findings.push(wrong(
                format!("integration {name}: {e}"),
                format!(
                    "store the token as the secret {own} and run capsule-sync --backend aws integrations edit {name} \
                     --token secretsmanager:{own} (or list {name}=<secret> in the stack's SecretAllowList)"
                ),
            ));
            return;
        }
        let TokenSource::SecretsManager { secret_id } = &integration.token else { return };
        let arn = match self.aws.secrets.describe_secret().secret_id(secret_id).send().await {
            Ok(out) => out.arn().unwrap_or_default().to_string(),
            Err(e) => {
                self.findings.push(wrong(
                    format!("integration {name}: its secret {secret_id}: {}", said(&e)),
                    format!("aws secretsmanager create-secret --name {secret_id} --secret-string '{{\"token\": \"<Capsule API token>\"}}'"),
                ));
                return;
            }
        };
        let finding = match self.may_read(&table_sync.role, &arn, policies).await {
            (Verdict::Allowed(by), how) => Finding::Fine(format!(
                "integration {name}: secret {secret_id}, readable by {} ({how}: {by})",
                table_sync.name
            )),
            (verdict, how) => wrong(
                format!(
                    "integration {name}: {}'s role may not read its secret {arn} ({how}: {})",
                    table_sync.name,
                    match verdict {
                        Verdict::Denied(by) => format!("denied by {by}"),
                        Verdict::Conditional(by) => format!("only under the conditions of {by}"),
                        _ => "no statement allows secretsmanager:GetSecretValue on it".into(),
                    }
                ),
                format!(
                    "name the secret under the stack's SecretPrefix ({}) or grant TableSyncRole \
                     secretsmanager:GetSecretValue on it",
                    table_sync.env.get("CAPSULE_SECRET_PREFIX").map_or("capsule-sync/", String::as_str)
                ),
            ),
        };
        self.findings.push(finding);
    }

    /// Whether `role` may read the secret: IAM's own simulation when the operator may run it,
    /// else the role's policies judged here.
    async fn may_read(&self, role: &str, secret_arn: &str, policies: &[Value]) -> (Verdict, &'static str) {
        let action = "secretsmanager:GetSecretValue";
        let simulated = self
            .iam
            .simulate_principal_policy()
            .policy_source_arn(role)
            .action_names(action)
            .resource_arns(secret_arn)
            .send()
            .await;
        if let Ok(out) = simulated
            && let Some(result) = out.evaluation_results().first()
        {
            let verdict = match result.eval_decision().as_str() {
                "allowed" => Verdict::Allowed("IAM".into()),
                "explicitDeny" => Verdict::Denied("an explicit deny".into()),
                _ => Verdict::NotAllowed,
            };
            return (verdict, "iam:SimulatePrincipalPolicy");
        }
        (policy::evaluate(policies, action, secret_arn), "the role's policies")
    }
}

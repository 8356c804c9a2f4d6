//! The IAM policy evaluator: `@cloud-copilot/iam-simulate` (tests/iam-evaluator), run by Node.
//! It is a maintained evaluator of identity and resource policies with every condition
//! operator and set qualifier, and it checks each action, resource type and context key against
//! AWS's service reference data, so a wrong ARN form (an object ARN for `s3:ListBucket`) is an
//! error rather than a silent deny. moto's own IAM enforcement ignores conditions and resources;
//! AWS's `SimulatePrincipalPolicy` needs an account.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::requests::IamRequest;

/// The policies a request is judged by.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Each function's role: (role ARN, its policy documents).
    pub roles: BTreeMap<String, (String, Vec<Value>)>,
    /// Resource policies by the ARN prefix they govern (the bucket's policy for its objects).
    pub resources: Vec<(String, Value)>,
}

/// What IAM decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied(String),
    /// The evaluator refused the request itself (unknown action, wrong resource type, ...).
    Invalid(String),
}

fn evaluator_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/iam-evaluator"))
}

/// Judges every request by `policies` in one run of the evaluator.
pub fn evaluate(policies: &Policies, requests: &[IamRequest]) -> Vec<Decision> {
    let dir = evaluator_dir();
    assert!(
        dir.join("node_modules/@cloud-copilot/iam-simulate").is_dir(),
        "the IAM evaluator is not installed: `npm ci --prefix tests/iam-evaluator` (bash scripts/test.sh does it)"
    );
    let input: Vec<Value> = requests
        .iter()
        .map(|r| {
            let (role, documents) =
                policies.roles.get(&r.function).cloned().unwrap_or_else(|| (format!("unknown-{}", r.function), vec![]));
            let resource_policy =
                policies.resources.iter().find(|(prefix, _)| r.resource.starts_with(prefix.as_str())).map(|(_, p)| p);
            json!({
                "principal": role,
                "action": r.action,
                "resource": r.resource,
                "context": r.context,
                "identityPolicies": documents,
                "resourcePolicy": resource_policy,
            })
        })
        .collect();
    let mut child = Command::new("node")
        .arg(dir.join("evaluate.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs the IAM evaluator (Node.js 18 or later)");
    let text = json!({ "requests": input }).to_string();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the IAM evaluator failed: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the evaluator answers JSON");
    assert_eq!(answers.len(), requests.len());
    answers
        .into_iter()
        .map(|a| match (a["result"].as_str(), a["error"].as_str()) {
            (Some("Allowed"), _) => Decision::Allowed,
            (Some(other), _) => Decision::Denied(other.to_string()),
            (None, Some(error)) => Decision::Invalid(error.to_string()),
            _ => Decision::Invalid(a.to_string()),
        })
        .collect()
}

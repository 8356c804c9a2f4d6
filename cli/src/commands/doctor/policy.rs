//! Whether an IAM role's inline policies allow an action on a resource, for `doctor` when the
//! account cannot answer `iam:SimulatePrincipalPolicy` (a role the operator may read but not
//! simulate, or an emulator). Only Allow and Deny statements whose Action and Resource match
//! count; a matching statement with a Condition is reported as undecided rather than guessed.

use serde_json::Value;

/// What the role's policies say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by the statement with this Sid (or its position).
    Allowed(String),
    Denied(String),
    NotAllowed,
    /// Only a statement with conditions matches: it depends on the request.
    Conditional(String),
}

/// `*` and `?` wildcards, as IAM matches actions (case-insensitively) and resources.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Judges `action` on `resource` by the role's policy documents.
pub fn evaluate(documents: &[Value], action: &str, resource: &str) -> Verdict {
    let mut verdict = Verdict::NotAllowed;
    for document in documents {
        let statements = match &document["Statement"] {
            Value::Array(list) => list.iter().collect::<Vec<_>>(),
            single => vec![single],
        };
        for (i, statement) in statements.into_iter().enumerate() {
            let sid = statement["Sid"].as_str().map_or_else(|| format!("statement {}", i + 1), String::from);
            let acts = strings(&statement["Action"]).iter().any(|a| glob(&a.to_lowercase(), &action.to_lowercase()));
            let on = strings(&statement["Resource"]).iter().any(|r| glob(r, resource));
            if !(acts && on) {
                continue;
            }
            let conditional = statement.get("Condition").is_some_and(|c| !c.is_null());
            match (statement["Effect"].as_str(), conditional) {
                (Some("Deny"), false) => return Verdict::Denied(sid),
                (Some("Allow"), false) => verdict = Verdict::Allowed(sid),
                (Some("Allow"), true) if verdict == Verdict::NotAllowed => verdict = Verdict::Conditional(sid),
                _ => {}
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statements_match_by_action_and_resource_wildcards() {
        let policy = json!({"Statement": [
            {"Sid": "Tokens", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
             "Resource": "arn:aws:secretsmanager:us-east-1:1:secret:capsule-sync/*"},
            {"Sid": "Keys", "Effect": "Allow", "Action": "dynamodb:*", "Resource": "arn:t",
             "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["INT#*"]}}},
            {"Sid": "NotThat", "Effect": "Deny", "Action": "secretsmanager:*",
             "Resource": "arn:aws:secretsmanager:us-east-1:1:secret:capsule-sync/root-??????"}
        ]});
        let docs = [policy];
        let secret = |name: &str| format!("arn:aws:secretsmanager:us-east-1:1:secret:{name}-Ab12Cd");
        assert_eq!(
            evaluate(&docs, "secretsmanager:GetSecretValue", &secret("capsule-sync/acme")),
            Verdict::Allowed("Tokens".into())
        );
        assert_eq!(
            evaluate(&docs, "SecretsManager:getSecretValue", &secret("capsule-sync/acme")),
            Verdict::Allowed("Tokens".into())
        );
        assert_eq!(evaluate(&docs, "secretsmanager:GetSecretValue", &secret("other/acme")), Verdict::NotAllowed);
        assert_eq!(
            evaluate(&docs, "secretsmanager:GetSecretValue", &secret("capsule-sync/root")),
            Verdict::Denied("NotThat".into())
        );
        assert_eq!(evaluate(&docs, "dynamodb:GetItem", "arn:t"), Verdict::Conditional("Keys".into()));
        assert_eq!(evaluate(&docs, "s3:GetObject", "arn:t"), Verdict::NotAllowed);
    }
}

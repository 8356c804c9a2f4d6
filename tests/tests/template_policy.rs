//! The IAM in `template.yaml` grants each function what its code calls and nothing else: every
//! function has an explicit role (no SAM policy templates, which expand to ACL and lifecycle
//! writes), no action is a wildcard, every resource is one of this stack's (a wildcard only
//! below a stack resource or parameter), the orchestrator writes only dispatch records, and the
//! functions log to groups with a retention.

use std::collections::BTreeSet;

use serde_norway::Value;
use serde_norway::value::TaggedValue;

fn template_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap()
}

fn tag(v: &Value) -> Option<(&str, &Value)> {
    match v {
        Value::Tagged(t) => Some((tag_name(t), &t.value)),
        _ => None,
    }
}

fn tag_name(t: &TaggedValue) -> &str {
    let name = t.tag.to_string();
    // `!Sub` → "Sub": the tags this template uses.
    ["Sub", "GetAtt", "Ref", "If", "Not", "Equals"].into_iter().find(|k| name == format!("!{k}")).unwrap_or("?")
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// A statement's branches: a `!If` statement is both of its non-empty branches.
fn statements(list: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for s in list.as_sequence().into_iter().flatten() {
        match tag(s) {
            Some(("If", branches)) => {
                for b in branches.as_sequence().unwrap().iter().skip(1) {
                    if b.as_mapping().is_some() {
                        out.push(b);
                    }
                }
            }
            _ => out.push(s),
        }
    }
    out
}

/// What the template's IAM gets wrong; empty when it is right.
fn violations(text: &str) -> Vec<String> {
    let doc: Value = serde_norway::from_str(text).unwrap();
    let resources = doc["Resources"].as_mapping().unwrap();
    let parameters = doc["Parameters"].as_mapping().unwrap();
    let known: BTreeSet<String> = resources
        .keys()
        .chain(parameters.keys())
        .filter_map(|k| k.as_str().map(str::to_string))
        .chain(["AWS::StackName".to_string()])
        .collect();
    let mut bad = Vec::new();

    // A resource is the stack's own: a reference, or a `!Sub` whose wildcard follows a reference.
    let check_resource = |who: &str, r: &Value, bad: &mut Vec<String>| match tag(r) {
        Some(("GetAtt" | "Ref", _)) => {}
        Some(("If", branches)) => {
            for b in branches.as_sequence().unwrap().iter().skip(1) {
                if let Some(("Sub", Value::String(text))) = tag(b) {
                    if !scoped(text, &known) {
                        bad.push(format!("{who}: resource `{text}` is not scoped to the stack"));
                    }
                } else if !matches!(tag(b), Some(("GetAtt" | "Ref", _))) && b.as_str() != Some("*") {
                    bad.push(format!("{who}: resource branch {b:?} is not the stack's"));
                }
            }
        }
        Some(("Sub", Value::String(text))) if scoped(text, &known) => {}
        _ => bad.push(format!("{who}: resource {r:?} is not one of the stack's")),
    };

    let mut roles = std::collections::BTreeMap::new();
    for (name, resource) in resources {
        let name = name.as_str().unwrap();
        let kind = resource["Type"].as_str().unwrap_or_default();
        let props = &resource["Properties"];
        if kind == "AWS::Serverless::Function" {
            if !props["Policies"].is_null() {
                bad.push(format!("{name}: SAM `Policies` (policy templates grant more than the code uses)"));
            }
            if tag(&props["Role"]).is_none() {
                bad.push(format!("{name}: no explicit role"));
            }
            match tag(&props["LoggingConfig"]["LogGroup"]) {
                Some(("Ref", Value::String(group))) => {
                    if resources.get(group.as_str()).is_none_or(|g| g["Properties"]["RetentionInDays"].is_null()) {
                        bad.push(format!("{name}: log group {group} has no retention"));
                    }
                }
                _ => bad.push(format!("{name}: no log group of the stack's (logs would be kept forever)")),
            }
        }
        if kind != "AWS::IAM::Role" {
            continue;
        }
        let mut actions = Vec::new();
        for policy in props["Policies"].as_sequence().into_iter().flatten() {
            for statement in statements(&policy["PolicyDocument"]["Statement"]) {
                if statement["Effect"].as_str() != Some("Allow") {
                    continue;
                }
                let sid = statement["Sid"].as_str().unwrap_or("?");
                let who = format!("{name}/{sid}");
                for action in strings(&statement["Action"]) {
                    if action.contains('*') {
                        bad.push(format!("{who}: wildcard action `{action}`"));
                    }
                    actions.push((action, statement.clone()));
                }
                match &statement["Resource"] {
                    Value::Sequence(list) => list.iter().for_each(|r| check_resource(&who, r, &mut bad)),
                    r => check_resource(&who, r, &mut bad),
                }
            }
        }
        roles.insert(name.to_string(), actions);
    }

    let has = |role: &str, action: &str| roles.get(role).is_some_and(|a| a.iter().any(|(x, _)| x == action));
    for needed in ["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject", "secretsmanager:GetSecretValue"] {
        if !has("TableSyncRole", needed) {
            bad.push(format!("TableSyncRole lacks {needed}, which the code needs"));
        }
    }
    for (action, statement) in roles.get("OrchestratorRole").into_iter().flatten() {
        let service = action.split(':').next().unwrap_or_default();
        if matches!(service, "s3" | "secretsmanager" | "kms") {
            bad.push(format!("OrchestratorRole: {action} (it reads no data and no token)"));
        }
        let writes = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"];
        if writes.contains(&action.as_str()) {
            let keys = strings(&statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]);
            // Its dispatch records and its entries in the due index, nothing else.
            if keys.is_empty() || keys.iter().any(|k| k != "DISPATCH#*" && k != "DUE#*") {
                bad.push(format!("OrchestratorRole: {action} beyond dispatch records ({keys:?})"));
            }
        }
    }
    let table_sync = &resources["TableSyncFunction"]["Properties"];
    if table_sync["ReservedConcurrentExecutions"].is_null() {
        bad.push("TableSyncFunction: no reserved concurrency setting".into());
    }
    bad
}

/// `arn:…:${AWS::StackName}-x`, `${Bucket.Arn}/${Prefix}/*`: every `*` comes after a reference
/// to one of the stack's resources or parameters.
fn scoped(text: &str, known: &BTreeSet<String>) -> bool {
    let references: Vec<(usize, &str)> = text
        .match_indices("${")
        .filter_map(|(at, _)| {
            let name = text[at + 2..].split('}').next()?;
            let root = if name.starts_with("AWS::") { name } else { name.split('.').next()? };
            Some((at, root))
        })
        .collect();
    let own: Vec<usize> = references.iter().filter(|(_, r)| known.contains(*r)).map(|(at, _)| *at).collect();
    let first_wildcard = text.find('*');
    !own.is_empty() && first_wildcard.is_none_or(|w| own.iter().any(|at| *at < w))
}

#[test]
fn each_function_holds_only_what_its_code_needs() {
    let found = violations(&template_text());
    assert!(found.is_empty(), "template.yaml IAM:\n{}", found.join("\n"));
}

#[test]
fn the_policy_check_catches_wildcards_missing_grants_and_wider_writes() {
    let text = template_text();
    let mutations = [
        ("- s3:AbortMultipartUpload", "- s3:*", "wildcard action `s3:*`"),
        ("- s3:AbortMultipartUpload", "- s3:ListMultipartUploadParts", "lacks s3:AbortMultipartUpload"),
        ("- \"DISPATCH#*\"", "- \"INT#*\"", "beyond dispatch records"),
        ("Resource: !GetAtt FailureQueue.Arn", "Resource: \"*\"", "is not one of the stack's"),
        ("RetentionInDays: !Ref LogRetentionDays", "Description: none", "has no retention"),
    ];
    for (from, to, expected) in mutations {
        assert!(text.contains(from), "the template no longer contains `{from}`");
        let found = violations(&text.replacen(from, to, 1));
        assert!(found.iter().any(|v| v.contains(expected)), "`{from}` → `{to}`: {found:?}");
    }
}

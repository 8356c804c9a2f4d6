//! What IAM authorises for each recorded call: the action, the resource ARN and the condition
//! keys the policies use (`dynamodb:LeadingKeys`, `s3:prefix`), as AWS's service authorization
//! reference defines them. A call this cannot map fails the test: nothing goes unchecked.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::recorder::RecordedCall;

/// Where the functions run: the names an ARN needs.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub account: String,
    pub region: String,
    /// A function name as the test's Lambda endpoint knows it → as the stack names it.
    pub functions: BTreeMap<String, String>,
    /// `OutputKmsKeyArn`: S3 calls on its objects also use the key on the caller's behalf.
    pub kms_key: Option<String>,
}

/// One authorisation IAM makes.
#[derive(Debug, Clone, PartialEq)]
pub struct IamRequest {
    /// The function whose role is asked (`orchestrator`, `table-sync`).
    pub function: String,
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, Value>,
    /// What the function did, for messages: the call it came from.
    pub call: String,
}

impl IamRequest {
    pub fn new(function: &str, action: &str, resource: &str, call: &str) -> IamRequest {
        IamRequest {
            function: function.into(),
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
            call: call.into(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> IamRequest {
        self.context.insert(key.into(), value);
        self
    }
}

impl Deployment {
    pub fn table_arn(&self, table: &str) -> String {
        format!("arn:aws:dynamodb:{}:{}:table/{table}", self.region, self.account)
    }

    /// A secret's ARN: Secrets Manager appends six random characters to the name.
    pub fn secret_arn(&self, name: &str) -> String {
        format!("arn:aws:secretsmanager:{}:{}:secret:{name}-Ab12Cd", self.region, self.account)
    }

    pub fn function_arn(&self, name: &str) -> String {
        let name = self.functions.get(name).map_or(name, String::as_str);
        format!("arn:aws:lambda:{}:{}:function:{name}", self.region, self.account)
    }

    /// The IAM requests one call needs.
    pub fn requests(&self, call: &RecordedCall) -> Result<Vec<IamRequest>, String> {
        match call.service.as_str() {
            "dynamodb" => self.dynamodb(call),
            "s3" => self.s3(call),
            "secretsmanager" => self.secrets(call),
            "lambda" => self.lambda(call),
            other => Err(format!("no IAM mapping for service `{other}` ({} {})", call.method, call.path)),
        }
    }

    fn dynamodb(&self, call: &RecordedCall) -> Result<Vec<IamRequest>, String> {
        let op = target_operation(call)?;
        let body: Value = serde_json::from_slice(&call.body).map_err(|e| format!("DynamoDB {op} body: {e}"))?;
        let what = format!("DynamoDB {op}");
        let item = |action: &str, spec: &Value, key: &str| -> Result<IamRequest, String> {
            let table = spec["TableName"].as_str().ok_or(format!("{what}: no TableName"))?;
            let pk = spec[key]["pk"]["S"].as_str().ok_or(format!("{what}: no pk in {key}"))?;
            Ok(IamRequest::new(&call.principal, &format!("dynamodb:{action}"), &self.table_arn(table), &what)
                .with("dynamodb:LeadingKeys", json!([pk])))
        };
        match op.as_str() {
            "GetItem" | "DeleteItem" | "UpdateItem" => Ok(vec![item(&op, &body, "Key")?]),
            "PutItem" => Ok(vec![item(&op, &body, "Item")?]),
            "Query" => {
                let table = body["TableName"].as_str().ok_or(format!("{what}: no TableName"))?;
                // A query of an index is authorised on the index's ARN, keyed by its partition key.
                let (resource, key) = match body["IndexName"].as_str() {
                    Some("due") => (format!("{}/index/due", self.table_arn(table)), "due"),
                    Some(other) => return Err(format!("{what}: no IAM mapping for index `{other}`")),
                    None => (self.table_arn(table), "pk"),
                };
                let pk = query_partition(&body, key).ok_or(format!("{what}: no `{key} = :value` in {body}"))?;
                Ok(vec![
                    IamRequest::new(&call.principal, "dynamodb:Query", &resource, &what)
                        .with("dynamodb:LeadingKeys", json!([pk])),
                ])
            }
            "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                .as_array()
                .ok_or(format!("{what}: no TransactItems"))?
                .iter()
                .map(|entry| {
                    let (kind, spec) =
                        entry.as_object().and_then(|o| o.iter().next()).ok_or(format!("{what}: empty"))?;
                    let (action, key) = match kind.as_str() {
                        "Put" => ("PutItem", "Item"),
                        "Update" => ("UpdateItem", "Key"),
                        "Delete" => ("DeleteItem", "Key"),
                        "ConditionCheck" => ("ConditionCheckItem", "Key"),
                        "Get" => ("GetItem", "Key"),
                        other => return Err(format!("{what}: unknown entry {other}")),
                    };
                    item(action, spec, key)
                })
                .collect(),
            _ => {
                let table = body["TableName"].as_str().ok_or(format!("{what}: no TableName"))?;
                Ok(vec![IamRequest::new(&call.principal, &format!("dynamodb:{op}"), &self.table_arn(table), &what)])
            }
        }
    }

    fn secrets(&self, call: &RecordedCall) -> Result<Vec<IamRequest>, String> {
        let op = target_operation(call)?;
        let body: Value = serde_json::from_slice(&call.body).map_err(|e| format!("Secrets Manager {op}: {e}"))?;
        let id = body["SecretId"].as_str().ok_or(format!("Secrets Manager {op}: no SecretId"))?;
        let arn = if id.starts_with("arn:") { id.to_string() } else { self.secret_arn(id) };
        Ok(vec![IamRequest::new(
            &call.principal,
            &format!("secretsmanager:{op}"),
            &arn,
            &format!("Secrets Manager {op}"),
        )])
    }

    fn lambda(&self, call: &RecordedCall) -> Result<Vec<IamRequest>, String> {
        let name = call
            .path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|p| p.strip_suffix("/invocations"))
            .ok_or(format!("no IAM mapping for Lambda {} {}", call.method, call.path))?;
        let arn = if name.starts_with("arn:") { name.to_string() } else { self.function_arn(name) };
        Ok(vec![IamRequest::new(&call.principal, "lambda:InvokeFunction", &arn, "Lambda Invoke")])
    }

    /// Path-style S3 (`/bucket/key`), as the SDK sends it to a custom endpoint.
    fn s3(&self, call: &RecordedCall) -> Result<Vec<IamRequest>, String> {
        let path = call.path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').map_or((path, ""), |(b, k)| (b, k));
        let bucket_arn = format!("arn:aws:s3:::{bucket}");
        let object = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
        let who = call.principal.as_str();
        let secure = |r: IamRequest| r.with("aws:SecureTransport", json!("true"));
        let (method, multipart) = (call.method.as_str(), call.has_query("uploadId"));
        let mut requests = if key.is_empty() {
            match method {
                "GET" if call.has_query("uploads") => {
                    vec![IamRequest::new(who, "s3:ListBucketMultipartUploads", &bucket_arn, "S3 ListMultipartUploads")]
                }
                "GET" | "HEAD" => {
                    let list = IamRequest::new(who, "s3:ListBucket", &bucket_arn, "S3 ListObjectsV2");
                    vec![match call.query("prefix") {
                        Some(prefix) => list.with("s3:prefix", json!(prefix)),
                        None => list,
                    }]
                }
                "POST" if call.has_query("delete") => deleted_keys(&call.body)
                    .iter()
                    .map(|k| IamRequest::new(who, "s3:DeleteObject", &object(k), "S3 DeleteObjects"))
                    .collect(),
                _ => return Err(format!("no IAM mapping for S3 {method} /{bucket}")),
            }
        } else {
            let (action, what) = match method {
                "GET" | "HEAD" if multipart => ("s3:ListMultipartUploadParts", "S3 ListParts"),
                "GET" | "HEAD" => ("s3:GetObject", "S3 GetObject"),
                "PUT" if multipart => ("s3:PutObject", "S3 UploadPart"),
                "PUT" => ("s3:PutObject", "S3 PutObject"),
                "POST" if call.has_query("uploads") => ("s3:PutObject", "S3 CreateMultipartUpload"),
                "POST" if multipart => ("s3:PutObject", "S3 CompleteMultipartUpload"),
                "DELETE" if multipart => ("s3:AbortMultipartUpload", "S3 AbortMultipartUpload"),
                "DELETE" => ("s3:DeleteObject", "S3 DeleteObject"),
                _ => return Err(format!("no IAM mapping for S3 {method} /{bucket}/{key}")),
            };
            let mut out = vec![IamRequest::new(who, action, &object(key), what)];
            if let Some(source) = call.header("x-amz-copy-source") {
                let source = source.trim_start_matches('/');
                out.push(IamRequest::new(who, "s3:GetObject", &format!("arn:aws:s3:::{source}"), "S3 CopyObject"));
            }
            // SSE-KMS: S3 asks KMS with the caller's permissions (a data key to write; to
            // decrypt when reading or adding parts to an upload).
            if let Some(key) = &self.kms_key {
                let kms = match action {
                    "s3:PutObject" if !multipart => Some("kms:GenerateDataKey"),
                    "s3:PutObject" | "s3:GetObject" => Some("kms:Decrypt"),
                    _ => None,
                };
                if let Some(kms) = kms {
                    out.push(IamRequest::new(who, kms, key, &format!("{what} (SSE-KMS)")));
                }
            }
            out
        };
        Ok(requests.drain(..).map(|r| if r.action.starts_with("s3:") { secure(r) } else { r }).collect())
    }
}

/// `DynamoDB_20120810.PutItem` → `PutItem`.
fn target_operation(call: &RecordedCall) -> Result<String, String> {
    let target = call.header("x-amz-target").ok_or(format!("{} call without X-Amz-Target", call.service))?;
    Ok(target.rsplit('.').next().unwrap_or(target).to_string())
}

/// The partition key value of a Query: its `<key> = :value` (or `#name = :value`) clause.
fn query_partition(body: &Value, key: &str) -> Option<String> {
    let expression = body["KeyConditionExpression"].as_str()?;
    expression.split(" AND ").find_map(|clause| {
        let (name, value) = clause.split_once(" = ")?;
        let name = name.trim();
        let name = body["ExpressionAttributeNames"][name].as_str().unwrap_or(name);
        (name == key).then(|| body["ExpressionAttributeValues"][value.trim()]["S"].as_str().map(String::from))?
    })
}

/// The keys of an S3 DeleteObjects request body.
fn deleted_keys(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(String::from).collect()
}

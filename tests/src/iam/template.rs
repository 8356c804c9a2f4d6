//! template.yaml's IAM as a deployment would have it: the role policies and the bucket policy
//! with the stack's parameters, names and ARNs substituted (CloudFormation's `Ref`, `Fn::Sub`,
//! `Fn::GetAtt`, `Fn::If` and conditions, as far as the template uses them).

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use serde_norway::Value;

/// A stack of the template: parameters, and what each resource is called once created.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub name: String,
    pub account: String,
    pub region: String,
    pub parameters: BTreeMap<String, String>,
    /// `Ref` of a resource.
    pub refs: BTreeMap<String, String>,
    /// `Fn::GetAtt` of a resource: (logical id, attribute) → value.
    pub attributes: BTreeMap<(String, String), String>,
}

/// The template, parsed, resolved against one stack.
pub struct Resolved<'a> {
    doc: Value,
    stack: &'a Stack,
}

impl<'a> Resolved<'a> {
    pub fn new(template: &str, stack: &'a Stack) -> Result<Resolved<'a>, String> {
        let doc = serde_norway::from_str(template).map_err(|e| format!("template.yaml: {e}"))?;
        Ok(Resolved { doc, stack })
    }

    /// The inline policy documents of a role.
    pub fn role_policies(&self, role: &str) -> Result<Vec<Json>, String> {
        let policies = &self.doc["Resources"][role]["Properties"]["Policies"];
        let policies = policies.as_sequence().ok_or(format!("{role} has no Policies"))?;
        policies.iter().map(|p| self.resolve(&p["PolicyDocument"])?.ok_or(format!("{role}: empty policy"))).collect()
    }

    /// A bucket policy's document.
    pub fn resource_policy(&self, logical: &str) -> Result<Json, String> {
        self.resolve(&self.doc["Resources"][logical]["Properties"]["PolicyDocument"])?
            .ok_or(format!("{logical} has no PolicyDocument"))
    }

    fn parameter(&self, name: &str) -> Option<String> {
        self.stack.parameters.get(name).cloned().or_else(|| {
            let default = &self.doc["Parameters"][name]["Default"];
            match default {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => self.doc["Parameters"].get(name).map(|_| String::new()),
            }
        })
    }

    fn reference(&self, name: &str) -> Result<Option<String>, String> {
        let pseudo = match name {
            "AWS::StackName" => Some(self.stack.name.clone()),
            "AWS::Region" => Some(self.stack.region.clone()),
            "AWS::AccountId" => Some(self.stack.account.clone()),
            "AWS::Partition" => Some("aws".into()),
            "AWS::URLSuffix" => Some("amazonaws.com".into()),
            "AWS::NoValue" => return Ok(None),
            _ => None,
        };
        pseudo
            .or_else(|| self.parameter(name))
            .or_else(|| self.stack.refs.get(name).cloned())
            .map(Some)
            .ok_or(format!("`Ref {name}`: no such parameter, and the stack does not name that resource"))
    }

    fn attribute(&self, logical: &str, attribute: &str) -> Result<String, String> {
        self.stack
            .attributes
            .get(&(logical.to_string(), attribute.to_string()))
            .cloned()
            .ok_or(format!("`GetAtt {logical}.{attribute}`: the stack does not say"))
    }

    fn condition(&self, name: &str) -> Result<bool, String> {
        let condition = self.doc["Conditions"].get(name).ok_or(format!("no condition {name}"))?;
        Ok(self.resolve(condition)? == Some(Json::Bool(true)))
    }

    fn substitute(&self, text: &str, extra: &Map<String, Json>) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or(format!("unclosed ${{ in {text}"))? + start;
            let name = &rest[start + 2..end];
            let value = match (extra.get(name), name.split_once('.')) {
                (Some(v), _) => v.as_str().unwrap_or_default().to_string(),
                (None, Some((logical, attribute))) if !name.starts_with("AWS::") => {
                    self.attribute(logical, attribute)?
                }
                _ => self.reference(name)?.unwrap_or_default(),
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A template value as JSON, its intrinsic functions applied; None for `AWS::NoValue`.
    fn resolve(&self, value: &Value) -> Result<Option<Json>, String> {
        Ok(Some(match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => serde_json::to_value(n).map_err(|e| e.to_string())?,
            Value::String(s) => Json::String(s.clone()),
            Value::Sequence(items) => Json::Array(
                items.iter().map(|v| self.resolve(v)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect(),
            ),
            Value::Mapping(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let key = k.as_str().ok_or("a non-string key")?.to_string();
                    if let Some(v) = self.resolve(v)? {
                        out.insert(key, v);
                    }
                }
                Json::Object(out)
            }
            Value::Tagged(tagged) => return self.intrinsic(&tagged.tag.to_string(), &tagged.value),
        }))
    }

    fn intrinsic(&self, tag: &str, arg: &Value) -> Result<Option<Json>, String> {
        let string = |s: String| Ok(Some(Json::String(s)));
        match tag {
            "!Ref" => Ok(self.reference(arg.as_str().ok_or("!Ref of a non-string")?)?.map(Json::String)),
            "!Sub" => match arg {
                Value::String(text) => string(self.substitute(text, &Map::new())?),
                Value::Sequence(parts) => {
                    let extra = self.resolve(&parts[1])?.and_then(|v| v.as_object().cloned()).unwrap_or_default();
                    string(self.substitute(parts[0].as_str().ok_or("!Sub text")?, &extra)?)
                }
                _ => Err("!Sub of neither text nor a list".into()),
            },
            "!GetAtt" => {
                let (logical, attribute) = match arg {
                    Value::String(s) => s.split_once('.').ok_or(format!("!GetAtt {s}"))?,
                    Value::Sequence(p) => (p[0].as_str().unwrap_or_default(), p[1].as_str().unwrap_or_default()),
                    _ => return Err("!GetAtt of neither text nor a list".into()),
                };
                string(self.attribute(logical, attribute)?)
            }
            "!If" => {
                let parts = arg.as_sequence().ok_or("!If of a non-list")?;
                let name = parts[0].as_str().ok_or("!If condition name")?;
                self.resolve(&parts[if self.condition(name)? { 1 } else { 2 }])
            }
            "!Not" => {
                let inner = self.resolve(&arg.as_sequence().ok_or("!Not of a non-list")?[0])?;
                Ok(Some(Json::Bool(inner != Some(Json::Bool(true)))))
            }
            "!Equals" => {
                let parts = arg.as_sequence().ok_or("!Equals of a non-list")?;
                let text = |v: Option<Json>| v.map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
                Ok(Some(Json::Bool(text(self.resolve(&parts[0])?) == text(self.resolve(&parts[1])?))))
            }
            "!Condition" => Ok(Some(Json::Bool(self.condition(arg.as_str().ok_or("!Condition name")?)?))),
            other => Err(format!("{other} is not resolved by this check")),
        }
    }
}

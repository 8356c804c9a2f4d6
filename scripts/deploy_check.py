"""Deploys template.yaml into an emulated account and checks that what was created is what the
template says, for two stacks side by side (`scripts/deploy-check.sh` runs it).

1. Translates the SAM template locally (the SAM translator `sam` itself uses), with each
   function's code uploaded to an artifacts bucket as `sam package` would.
2. Creates the stack in moto's CloudFormation and waits for CREATE_COMPLETE.
3. Applies what moto's CloudFormation skips (alarms, the schedule, the bucket policy, the
   event-invoke config, the metric filter) through each service's own API, with the stack's
   values resolved: that is where a second stack's name conflicts would show.
4. Reads every resource back and compares it with the template's resolved properties.

Usage: deploy_check.py --bootstraps DIR [--keep-state FILE]
The environment points boto3 at the emulator (AWS_ENDPOINT_URL); nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
FUNCTIONS = {"OrchestratorFunction": "orchestrator", "TableSyncFunction": "table-sync", "HookReceiverFunction": "hook-receiver"}
NO_VALUE = object()


class NoManagedPolicies:
    """The template names no managed policy: every function has an explicit role."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template_path: Path, artifacts: str) -> dict[str, Any]:
    """The template as CloudFormation receives it after `sam package` and the SAM transform."""
    template = yaml_parse(template_path.read_text())
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for logical, binary in FUNCTIONS.items():
        template["Resources"][logical]["Properties"]["CodeUri"] = {"Bucket": artifacts, "Key": f"{binary}.zip"}
    return transform(template, {}, NoManagedPolicies())


def code_zip(bootstraps: Path, binary: str) -> bytes:
    """A Lambda deployment package: the cross-built `bootstrap` at the archive's root."""
    path = bootstraps / binary / "bootstrap"
    if not path.is_file():
        sys.exit(f"deploy check: {path} is missing (cargo lambda build --release --arm64 builds it)")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


@dataclass
class Deployed:
    """One stack: its translated template, parameters, and what CloudFormation created."""

    name: str
    template: dict[str, Any]
    parameters: dict[str, str]
    account: str
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        return str(self.template["Parameters"][name].get("Default", ""))

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.name,
            "AWS::Region": REGION,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        return self.physical[name]

    def resolve(self, value: Any) -> Any:
        """CloudFormation's intrinsic functions, as far as this template uses them."""
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.attributes[(logical, attribute)]
            if key == "Fn::Sub":
                return self.substitute(arg)
            if key == "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if self.condition(name) else no)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Equals":
                left, right = (self.resolve(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(p) for p in self.resolve(parts))
            if key == "Condition":
                return self.condition(arg)
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def substitute(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
        out, rest = "", text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            out += before
            if name in extra:
                out += str(extra[name])
            elif "." in name and name.split(".", 1)[0] in self.template["Resources"]:
                out += str(self.attributes[tuple(name.split(".", 1))])
            else:
                out += str(self.ref(name))
        return out + rest

    def properties(self, logical: str) -> dict[str, Any]:
        return self.resolve(self.template["Resources"][logical].get("Properties", {}))

    def of_type(self, kind: str) -> list[str]:
        return [k for k, r in self.template["Resources"].items() if r["Type"] == kind]


class Account:
    """The emulated account's clients."""

    def __init__(self) -> None:
        session = boto3.session.Session(region_name=REGION)
        self.cloudformation = session.client("cloudformation")
        self.s3 = session.client("s3")
        self.functions = session.client("lambda")
        self.iam = session.client("iam")
        self.dynamodb = session.client("dynamodb")
        self.sqs = session.client("sqs")
        self.logs = session.client("logs")
        self.cloudwatch = session.client("cloudwatch")
        self.scheduler = session.client("scheduler")
        self.kms = session.client("kms")
        self.id = session.client("sts").get_caller_identity()["Account"]


# Resource types moto's CloudFormation cannot model: an output reading one of their attributes
# makes it refuse the whole stack, so such outputs are held back and resolved once the resource
# is applied through its own API (`check_outputs`).
UNMODELLED = {"AWS::Lambda::Url"}


def held_back_outputs(template: dict[str, Any]) -> dict[str, Any]:
    """The outputs whose value is an attribute of an unmodelled resource."""
    held = {}
    for name, output in template.get("Outputs", {}).items():
        value = output.get("Value")
        attribute = value.get("Fn::GetAtt") if isinstance(value, dict) else None
        if attribute is None:
            continue
        logical = attribute[0] if isinstance(attribute, list) else attribute.split(".", 1)[0]
        if template["Resources"].get(logical, {}).get("Type") in UNMODELLED:
            held[name] = output
    return held


def create_stack(account: Account, deployed: Deployed) -> float:
    """Creates the stack and waits for CREATE_COMPLETE; returns the seconds it took."""
    started = time.monotonic()
    held = held_back_outputs(deployed.template)
    body = {**deployed.template, "Outputs": {k: v for k, v in deployed.template.get("Outputs", {}).items() if k not in held}}
    account.cloudformation.create_stack(
        StackName=deployed.name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in deployed.parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    while True:
        stack = account.cloudformation.describe_stacks(StackName=deployed.name)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        time.sleep(0.2)
    if status != "CREATE_COMPLETE":
        events = account.cloudformation.describe_stack_events(StackName=deployed.name)["StackEvents"]
        reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events
                   if e.get("ResourceStatusReason")]
        raise SystemExit(f"deploy check: stack {deployed.name} ended {status}: {reasons}")
    resources = account.cloudformation.list_stack_resources(StackName=deployed.name)["StackResourceSummaries"]
    deployed.physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}
    return time.monotonic() - started


def read_attributes(account: Account, deployed: Deployed) -> None:
    """The `Fn::GetAtt` values the template uses, read from what was created."""
    d, p = deployed, deployed.physical
    for logical in d.of_type("AWS::Lambda::Function"):
        config = account.functions.get_function(FunctionName=p[logical])["Configuration"]
        d.attributes[(logical, "Arn")] = config["FunctionArn"]
    for logical in d.of_type("AWS::IAM::Role"):
        d.attributes[(logical, "Arn")] = account.iam.get_role(RoleName=p[logical])["Role"]["Arn"]
    for logical in d.of_type("AWS::SQS::Queue"):
        url = p[logical]
        attrs = account.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        d.attributes[(logical, "Arn")] = attrs["QueueArn"]
        d.attributes[(logical, "QueueName")] = url.rsplit("/", 1)[1]
    for logical in d.of_type("AWS::S3::Bucket"):
        d.attributes[(logical, "Arn")] = f"arn:aws:s3:::{p[logical]}"
    for logical in d.of_type("AWS::DynamoDB::Table"):
        d.attributes[(logical, "Arn")] = account.dynamodb.describe_table(TableName=p[logical])["Table"]["TableArn"]
    for logical in d.of_type("AWS::Logs::LogGroup"):
        d.attributes[(logical, "Arn")] = f"arn:aws:logs:{REGION}:{d.account}:log-group:{p[logical]}:*"


def lower_first(value: Any) -> Any:
    """CloudFormation's `MetricTransformations` keys as CloudWatch Logs' API spells them."""
    if isinstance(value, list):
        return [lower_first(v) for v in value]
    if isinstance(value, dict):
        return {k[0].lower() + k[1:]: lower_first(v) for k, v in value.items()}
    return value


def absent(read: Any) -> Any:
    """What a read returns, or None where the service says the configuration does not exist."""
    try:
        return read()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code.startswith("NoSuch") or code.endswith("NotFound") or code.endswith("NotFoundError") \
                or code == "ResourceNotFoundException":
            return None
        raise


def encryption_rule(rule: dict, to_api: bool) -> dict:
    """CloudFormation's `ServerSideEncryptionByDefault` is S3's `ApplyServerSideEncryptionByDefault`."""
    names = ("ServerSideEncryptionByDefault", "ApplyServerSideEncryptionByDefault")
    old, new = names if to_api else names[::-1]
    return {new if k == old else k: v for k, v in rule.items()}


def apply_skipped_properties(account: Account, deployed: Deployed) -> list[str]:
    """Properties of created resources that moto's CloudFormation ignores, applied through
    their own APIs; returns them."""
    applied = []
    s3 = account.s3
    for logical in deployed.of_type("AWS::S3::Bucket"):
        bucket, props = deployed.physical[logical], deployed.properties(logical)
        setters = {
            "PublicAccessBlockConfiguration": (
                lambda: s3.get_public_access_block(Bucket=bucket),
                lambda v: s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=v)),
            "OwnershipControls": (
                lambda: s3.get_bucket_ownership_controls(Bucket=bucket),
                lambda v: s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=v)),
            "VersioningConfiguration": (
                lambda: s3.get_bucket_versioning(Bucket=bucket).get("Status"),
                lambda v: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=v)),
            "LifecycleConfiguration": (
                lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket),
                lambda v: s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
                    {"ID": r["Id"], "Status": r["Status"], "Filter": {"Prefix": ""},
                     **{k: v for k, v in r.items() if k not in ("Id", "Status")}} for r in v["Rules"]]})),
            "BucketEncryption": (
                lambda: not differences(
                    [encryption_rule(r, to_api=True) for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]],
                    s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]),
                lambda v: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
                    "Rules": [encryption_rule(r, to_api=True) for r in v["ServerSideEncryptionConfiguration"]]})),
        }
        for name, (read, write) in setters.items():
            if name in props and not absent(read):
                write(props[name])
                applied.append(f"{logical}.{name}")
    db = account.dynamodb
    for logical in deployed.of_type("AWS::DynamoDB::Table"):
        table, props = deployed.physical[logical], deployed.properties(logical)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and db.describe_time_to_live(TableName=table)["TimeToLiveDescription"].get("TimeToLiveStatus") != "ENABLED":
            db.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
            applied.append(f"{logical}.TimeToLiveSpecification")
        pitr = props.get("PointInTimeRecoverySpecification")
        status = db.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        if pitr and status.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") != "ENABLED":
            db.update_continuous_backups(TableName=table, PointInTimeRecoverySpecification=pitr)
            applied.append(f"{logical}.PointInTimeRecoverySpecification")
    for logical in deployed.of_type("AWS::IAM::Role"):
        role, props = deployed.physical[logical], deployed.properties(logical)
        for policy in props.get("Policies", []):
            stored = account.iam.get_role_policy(RoleName=role, PolicyName=policy["PolicyName"])["PolicyDocument"]
            # (A policy without a Version, as SAM writes the schedule's, moto refuses to take.)
            if isinstance(stored, str) and "Version" in policy["PolicyDocument"]:
                # moto's CloudFormation stores Python's repr of the document, which no IAM client
                # (doctor among them) can read: written again as the JSON CloudFormation sends.
                account.iam.put_role_policy(RoleName=role, PolicyName=policy["PolicyName"],
                                            PolicyDocument=json.dumps(policy["PolicyDocument"]))
                applied.append(f"{logical}.Policies.{policy['PolicyName']}")
    for logical in deployed.of_type("AWS::Lambda::Function"):
        name, props = deployed.physical[logical], deployed.properties(logical)
        variables = account.functions.get_function_configuration(FunctionName=name).get("Environment", {}).get("Variables", {})
        if any(not isinstance(v, str) for v in variables.values()):
            # moto's CloudFormation keeps a Number parameter's value a number in a function's
            # environment, which Lambda's API (and the Rust SDK reading it) has only as text.
            account.functions.update_function_configuration(
                FunctionName=name, Environment={"Variables": {k: str(v) for k, v in variables.items()}})
            applied.append(f"{logical}.Environment (numbers as text)")
        reserved = props.get("ReservedConcurrentExecutions")
        current = account.functions.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
        if reserved is not None and current is None:
            account.functions.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=int(reserved))
            applied.append(f"{logical}.ReservedConcurrentExecutions")
    return applied


def apply_skipped(account: Account, deployed: Deployed) -> list[str]:
    """Creates, through its own API, each resource moto's CloudFormation did not; returns them.
    Generated names follow CloudFormation's `<stack>-<logical id>` form."""
    applied = []
    for logical, resource in deployed.template["Resources"].items():
        if logical in deployed.physical:
            continue
        props = deployed.properties(logical)
        kind = resource["Type"]
        try:
            name = apply_one(account, deployed, logical, kind, props)
        except ClientError as e:
            raise SystemExit(f"deploy check: stack {deployed.name}: creating {logical} ({kind}) failed: {e}")
        deployed.physical[logical] = name
        applied.append(f"{logical} ({kind})")
    return applied


def apply_one(account: Account, deployed: Deployed, logical: str, kind: str, props: dict) -> str:
    """Creates one resource through its service's API; returns its physical name."""
    name = f"{deployed.name}-{logical}"
    if kind == "AWS::CloudWatch::Alarm":
        account.cloudwatch.put_metric_alarm(AlarmName=name, **props)
    elif kind == "AWS::Scheduler::Schedule":
        name = props.pop("Name", name)
        account.scheduler.create_schedule(Name=name, **props)
    elif kind == "AWS::S3::BucketPolicy":
        name = props["Bucket"]
        account.s3.put_bucket_policy(Bucket=name, Policy=json.dumps(props["PolicyDocument"]))
    elif kind == "AWS::Lambda::EventInvokeConfig":
        name = props["FunctionName"]
        account.functions.put_function_event_invoke_config(**props)
    elif kind == "AWS::Logs::MetricFilter":
        account.logs.put_metric_filter(
            logGroupName=props["LogGroupName"],
            filterName=name,
            filterPattern=props["FilterPattern"],
            metricTransformations=lower_first(props["MetricTransformations"]),
        )
    elif kind == "AWS::Lambda::Url":
        name = props["TargetFunctionArn"]
        url = account.functions.create_function_url_config(FunctionName=name, AuthType=props["AuthType"])
        deployed.attributes[(logical, "FunctionUrl")] = url["FunctionUrl"]
    elif kind == "AWS::Lambda::Permission":
        name = props["FunctionName"]
        account.functions.add_permission(StatementId=logical, **props)
    else:
        raise SystemExit(f"deploy check: moto skipped {logical} ({kind}) and this check cannot apply it")
    return name


def check_outputs(deployed: Deployed) -> list[str]:
    """Each held-back output resolves, now that its resource exists, to a URL."""
    problems = []
    for name, output in held_back_outputs(deployed.template).items():
        value = deployed.resolve(output["Value"])
        if not (isinstance(value, str) and value.startswith(("http://", "https://"))):
            problems.append(f"{deployed.name}/Outputs.{name}: resolves to {value!r}, not a URL")
    return problems


def differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where `got` lacks or contradicts what `want` says (extra keys in `got` are fine: services
    add defaults). Numbers and booleans compare by their text, as CloudFormation passes them."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: want {want!r}, got {got!r}"]
        return [d for k, v in want.items() for d in differences(v, got.get(k), f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: want {want!r}, got {got!r}"]
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in differences(w, g, f"{path}[{i}]")]
    if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(got, (int, float)):
        return [] if float(want) == float(got) else [f"{path}: want {want!r}, got {got!r}"]
    if str(want).lower() != str(got).lower():
        return [f"{path}: want {want!r}, got {got!r}"]
    return []


def emulator_forms(document: Any) -> Any:
    """A policy as moto's CloudFormation writes it, compared in AWS's terms: its `GetAtt
    LogGroup.Arn` lacks AWS's `:*` suffix, and an `!If` that chose `AWS::NoValue` is left as
    null where CloudFormation drops the element."""
    if isinstance(document, list):
        return [emulator_forms(v) for v in document if v is not None]
    if isinstance(document, dict):
        return {k: emulator_forms(v) for k, v in document.items()}
    if isinstance(document, str) and ":log-group:" in document:
        return document.removesuffix(":*")
    return document


def same_json(want: Any, got: Any) -> bool:
    """Policy documents compare as data, whichever way the service serialised them."""
    if isinstance(got, str):
        try:
            got = json.loads(got)
        except json.JSONDecodeError:
            # moto's CloudFormation stores an inline role policy as Python's repr of it.
            got = ast.literal_eval(got)
    return json.dumps(emulator_forms(want), sort_keys=True) == json.dumps(emulator_forms(got), sort_keys=True)


class Verifier:
    """Reads each resource of a stack back and lists where it differs from the template."""

    def __init__(self, account: Account, deployed: Deployed, code: dict[str, str]) -> None:
        self.account, self.deployed, self.code = account, deployed, code
        self.problems: list[str] = []
        self.checked: list[str] = []

    def expect(self, logical: str, diffs: list[str]) -> None:
        self.checked.append(logical)
        self.problems.extend(f"{self.deployed.name}/{logical}{d}" for d in diffs)

    def run(self) -> list[str]:
        for logical, resource in self.deployed.template["Resources"].items():
            check = getattr(self, "check_" + resource["Type"].replace("AWS::", "").replace("::", "_").lower(), None)
            if check is None:
                self.problems.append(f"{self.deployed.name}/{logical}: no check for {resource['Type']}")
                continue
            check(logical, self.deployed.properties(logical), self.deployed.physical[logical])
        return self.problems

    def check_lambda_function(self, logical: str, props: dict, name: str) -> None:
        config = self.account.functions.get_function_configuration(FunctionName=name)
        want = {k: props[k] for k in ("Runtime", "Handler", "MemorySize", "Timeout", "Role", "Description",
                                      "Architectures", "Environment") if k in props}
        want["FunctionName"] = props["FunctionName"]
        want["CodeSha256"] = self.code[props["Code"]["S3Key"]]
        self.expect(logical, differences(want, config))
        reserved = self.account.functions.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
        if props.get("ReservedConcurrentExecutions") != reserved and str(props.get("ReservedConcurrentExecutions")) != str(reserved):
            self.problems.append(f"{self.deployed.name}/{logical}: reserved concurrency "
                                 f"{reserved}, template {props.get('ReservedConcurrentExecutions')}")

    def check_lambda_eventinvokeconfig(self, logical: str, props: dict, name: str) -> None:
        config = self.account.functions.get_function_event_invoke_config(FunctionName=name, Qualifier=props["Qualifier"])
        props = {k: v for k, v in props.items() if k not in ("FunctionName", "Qualifier")}
        self.expect(logical, differences(props, config))

    def check_lambda_url(self, logical: str, props: dict, name: str) -> None:
        config = self.account.functions.get_function_url_config(FunctionName=name)
        self.expect(logical, differences({"AuthType": props["AuthType"]}, config))

    def check_lambda_permission(self, logical: str, props: dict, name: str) -> None:
        # moto names a permission it created by an empty physical id: find it by what it grants.
        function = props["FunctionName"]
        policy = json.loads(self.account.functions.get_policy(FunctionName=function)["Policy"])
        granted = [st for st in policy["Statement"]
                   if st.get("Action") == props["Action"] and props["Principal"] in json.dumps(st.get("Principal"))]
        if not granted:
            self.problems.append(f"{self.deployed.name}/{logical}: {function}'s policy grants no "
                                 f"{props['Action']} to {props['Principal']}: {policy['Statement']}")

    def check_iam_role(self, logical: str, props: dict, name: str) -> None:
        iam = self.account.iam
        role = iam.get_role(RoleName=name)["Role"]
        diffs = [] if same_json(props["AssumeRolePolicyDocument"], role["AssumeRolePolicyDocument"]) \
            else [": trust policy differs"]
        for policy in props.get("Policies", []):
            got = iam.get_role_policy(RoleName=name, PolicyName=policy["PolicyName"])["PolicyDocument"]
            if not same_json(policy["PolicyDocument"], got):
                diffs.append(f".{policy['PolicyName']}: want {policy['PolicyDocument']}, got {got}")
        self.expect(logical, diffs)

    def check_dynamodb_table(self, logical: str, props: dict, name: str) -> None:
        db = self.account.dynamodb
        table = db.describe_table(TableName=name)["Table"]
        got = {
            "KeySchema": table["KeySchema"],
            "AttributeDefinitions": table["AttributeDefinitions"],
            "GlobalSecondaryIndexes": [
                {"IndexName": i["IndexName"], "KeySchema": i["KeySchema"], "Projection": i["Projection"]}
                for i in table.get("GlobalSecondaryIndexes", [])
            ],
            "BillingMode": table.get("BillingModeSummary", {}).get("BillingMode"),
            "SSESpecification": {"SSEEnabled": table.get("SSEDescription", {}).get("Status") == "ENABLED"},
            "TimeToLiveSpecification": {
                "AttributeName": db.describe_time_to_live(TableName=name)["TimeToLiveDescription"].get("AttributeName"),
                "Enabled": db.describe_time_to_live(TableName=name)["TimeToLiveDescription"].get("TimeToLiveStatus") == "ENABLED",
            },
            "PointInTimeRecoverySpecification": {
                "PointInTimeRecoveryEnabled": db.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
                ["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED",
            },
        }
        self.expect(logical, differences(props, got))

    def check_s3_bucket(self, logical: str, props: dict, name: str) -> None:
        s3 = self.account.s3
        got = {
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                encryption_rule(r, to_api=False)
                for r in s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]]},
            "PublicAccessBlockConfiguration": s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"],
            "OwnershipControls": s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"],
            "VersioningConfiguration": {"Status": s3.get_bucket_versioning(Bucket=name).get("Status")},
            "LifecycleConfiguration": {"Rules": [
                {"Id": r["ID"], "Status": r["Status"],
                 **({"AbortIncompleteMultipartUpload": r["AbortIncompleteMultipartUpload"]}
                    if "AbortIncompleteMultipartUpload" in r else {}),
                 **({"NoncurrentVersionExpiration": r["NoncurrentVersionExpiration"]}
                    if "NoncurrentVersionExpiration" in r else {})}
                for r in s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]]},
        }
        self.expect(logical, differences(props, got))

    def check_s3_bucketpolicy(self, logical: str, props: dict, name: str) -> None:
        got = self.account.s3.get_bucket_policy(Bucket=name)["Policy"]
        self.expect(logical, [] if same_json(props["PolicyDocument"], got) else [f": bucket policy {got}"])

    def check_sqs_queue(self, logical: str, props: dict, url: str) -> None:
        attrs = self.account.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.expect(logical, differences(props, attrs))

    def check_logs_loggroup(self, logical: str, props: dict, name: str) -> None:
        groups = self.account.logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        got = next(({"LogGroupName": g["logGroupName"], "RetentionInDays": g.get("retentionInDays")}
                    for g in groups if g["logGroupName"] == name), {})
        self.expect(logical, differences(props, got))

    def check_logs_metricfilter(self, logical: str, props: dict, name: str) -> None:
        filters = self.account.logs.describe_metric_filters(logGroupName=props["LogGroupName"])["metricFilters"]
        got = next((f for f in filters if f["filterName"] == name), {})
        want = {"filterPattern": props["FilterPattern"], "metricTransformations": lower_first(props["MetricTransformations"])}
        self.expect(logical, differences(want, got))

    def check_cloudwatch_alarm(self, logical: str, props: dict, name: str) -> None:
        alarms = self.account.cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        self.expect(logical, differences(props, alarms[0] if alarms else {}))

    def check_scheduler_schedule(self, logical: str, props: dict, name: str) -> None:
        schedule = self.account.scheduler.get_schedule(Name=name)
        self.expect(logical, differences({**props, "State": "ENABLED"}, schedule))


# What moto cannot hold, however it is applied: its CloudFormation creates every function
# x86_64 and UpdateFunctionCode ignores Architectures; neither its CloudFormation nor UpdateTable
# records a table's SSESpecification. Differences there are listed, not counted.
EMULATOR_GAPS = [
    ("Function", ".Architectures"),
    ("StateTable", ".SSESpecification"),
]


def emulator_gap(problem: str) -> bool:
    _, _, rest = problem.partition("/")
    return any(rest.split(".", 1)[0].endswith(logical) and ("." + rest.split(".", 1)[1]).startswith(path)
               for logical, path in EMULATOR_GAPS if "." in rest)


STACKS = [
    ("capsule-sync-production", {}),
    # A second team's deployment in the same account: every optional parameter set.
    ("capsule-sync-staging", {
        "OutputPrefix": "exports/crm",
        "SecretPrefix": "staging/capsule/",
        "TableSyncReservedConcurrency": "5",
        "ScheduleExpression": "rate(15 minutes)",
        "AllowedApiUrls": "https://capsule-proxy.example.com/api/v2",
    }),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstraps", type=Path, default=ROOT / "target" / "lambda")
    parser.add_argument("--outputs", type=Path, help="write each stack's name, parameters and physical ids here (JSON)")
    args = parser.parse_args()

    account = Account()
    artifacts = f"capsule-sync-artifacts-{account.id}"
    account.s3.create_bucket(Bucket=artifacts)
    code = {}
    for binary in FUNCTIONS.values():
        package = code_zip(args.bootstraps, binary)
        account.s3.put_object(Bucket=artifacts, Key=f"{binary}.zip", Body=package)
        code[f"{binary}.zip"] = base64.b64encode(hashlib.sha256(package).digest()).decode()
    translated = translate(ROOT / "template.yaml", artifacts)

    key = account.kms.create_key(Description="capsule-sync staging output")["KeyMetadata"]["Arn"]
    problems, outputs = [], []
    for name, parameters in STACKS:
        if name.endswith("staging"):
            parameters = {**parameters, "OutputKmsKeyArn": key}
        deployed = Deployed(name, json.loads(json.dumps(translated)), parameters, account.id)
        seconds = create_stack(account, deployed)
        read_attributes(account, deployed)
        applied = apply_skipped(account, deployed) + apply_skipped_properties(account, deployed)
        verifier = Verifier(account, deployed, code)
        found = verifier.run() + check_outputs(deployed)
        gaps = [p for p in found if emulator_gap(p)]
        found = [p for p in found if not emulator_gap(p)]
        problems += found
        print(f"{name}: CREATE_COMPLETE in {seconds:.1f} s; applied by API: {', '.join(applied) or 'nothing'}; "
              f"{len(verifier.checked)} resources verified, {len(found)} differences")
        for gap in gaps:
            print(f"  not held by moto (unverified): {gap}")
        outputs.append({"stack": name, "parameters": parameters, "physical": deployed.physical})
    if args.outputs:
        args.outputs.write_text(json.dumps(outputs, indent=2))
    for problem in problems:
        print(f"  differs: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

//! Checks `template.yaml` against the code, so a deploy can never miss a route or a variable:
//!
//! - every route of the router (`oven::http::ROUTES`) is an API Gateway route integrated with
//!   the function that serves it, every API Gateway route is a route of the router, and API
//!   Gateway may invoke each integrated function;
//! - every function's `Environment` names exactly the variables its code reads (the
//!   `oven::config::*_ENV` lists);
//! - the queues feeding the compile function give it at least 6 x its timeout of visibility,
//!   partial batch failures are on, and the DLQ the code is told about is the one it consumes.
//!
//! The comparisons are also run with a route or a variable removed on either side, so a check
//! that could not fail would fail here.

use std::collections::{BTreeMap, BTreeSet};

use oven::config;
use serde_yaml_ng::{Mapping, Value};

/// One route as the router serves it: method, OpenAPI path (`{id}`), function name.
type RouterRoute = (&'static str, &'static str, &'static str);

/// The router's route table and which function serves each route: `oven::http::ROUTES`.
fn router_table() -> Vec<RouterRoute> {
    oven::http::ROUTES
        .iter()
        .map(|r| (r.method, r.path, r.function.name()))
        .collect()
}

/// Router path parameters that may contain `/` (keyboard names do). API Gateway matches those
/// only with a greedy `{name+}` that ends the path, so everything from such a parameter on is
/// one API Gateway route.
const MULTI_SEGMENT_PARAMS: &[&str] = &["keyboard"];

/// What each function's code reads, by the function's binary name.
fn code_env() -> BTreeMap<String, BTreeSet<String>> {
    [
        ("submit", config::SUBMIT_ENV),
        ("status", config::STATUS_ENV),
        ("download", config::DOWNLOAD_ENV),
        ("compile", config::COMPILE_ENV),
    ]
    .into_iter()
    .map(|(f, vars)| (f.to_owned(), vars.iter().map(|v| v.to_string()).collect()))
    .collect()
}

/// A route in one comparable form: method and path with parameter names dropped (`{}` for one
/// segment, `{+}` for the rest of the path). The router matches paths itself, so API Gateway's
/// parameter names do not matter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
    function: String,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.path, self.function)
    }
}

fn normalize_path(path: &str) -> String {
    let mut out = Vec::new();
    for seg in path.split('/') {
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) if p.ends_with('+') || MULTI_SEGMENT_PARAMS.contains(&p) => {
                out.push("{+}");
                break;
            }
            Some(_) => out.push("{}"),
            None => out.push(seg),
        }
    }
    out.join("/")
}

fn route(method: &str, path: &str, function: &str) -> Route {
    Route {
        method: method.to_ascii_uppercase(),
        path: normalize_path(path),
        function: function.to_owned(),
    }
}

fn load_template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("read template.yaml");
    serde_yaml_ng::from_str(&text).expect("template.yaml is YAML")
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = get(cur, k)?;
    }
    cur.as_str()
}

/// The value under a CloudFormation short-form tag (`!GetAtt X.Arn` -> ("GetAtt", "X.Arn")).
fn tagged(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((
            t.tag.to_string().trim_start_matches('!').to_owned(),
            &t.value,
        )),
        _ => None,
    }
}

fn is_ref_to(v: Option<&Value>, target: &str) -> bool {
    matches!(v.and_then(tagged), Some((tag, v)) if tag == "Ref" && v.as_str() == Some(target))
}

/// `!GetAtt X.Arn` -> `X`.
fn get_att_arn(v: &Value) -> Option<String> {
    let (tag, inner) = tagged(v)?;
    let target = inner.as_str()?.strip_suffix(".Arn")?;
    (tag == "GetAtt").then(|| target.to_owned())
}

fn resources(t: &Value) -> &Mapping {
    get(t, "Resources")
        .and_then(Value::as_mapping)
        .expect("Resources")
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    get(t, "Resources")
        .and_then(|r| get(r, id))
        .unwrap_or_else(|| panic!("resource {id}"))
}

fn properties<'a>(t: &'a Value, id: &str) -> &'a Value {
    get(resource(t, id), "Properties").unwrap_or_else(|| panic!("{id}: Properties"))
}

fn number(v: &Value, key: &str) -> u64 {
    get(v, key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{key} must be a literal number"))
}

/// The template's functions: (logical id, function name, properties). The name is the binary
/// (`Metadata.BuildProperties.Binary`) or, for the image function, the logical id without
/// `Function`, lower-cased.
fn functions(t: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (id, res) in resources(t) {
        if str_at(res, &["Type"]) != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id.as_str().expect("logical id").to_owned();
        let name = str_at(res, &["Metadata", "BuildProperties", "Binary"])
            .map(str::to_owned)
            .unwrap_or_else(|| id.trim_end_matches("Function").to_ascii_lowercase());
        let props = get(res, "Properties")
            .cloned()
            .expect("function Properties");
        out.push((id, name, props));
    }
    out
}

/// The API Gateway routes: `RouteKey` and the function behind `Target` (route -> integration
/// -> `IntegrationUri: !GetAtt <Function>.Arn`).
fn template_routes(t: &Value) -> Vec<Route> {
    let names: BTreeMap<String, String> = functions(t)
        .into_iter()
        .map(|(id, name, _)| (id, name))
        .collect();
    let mut out = Vec::new();
    for (id, res) in resources(t) {
        if str_at(res, &["Type"]) != Some("AWS::ApiGatewayV2::Route") {
            continue;
        }
        let p = get(res, "Properties").expect("route Properties");
        assert!(is_ref_to(get(p, "ApiId"), "Api"), "{id:?}: ApiId");
        let key = str_at(p, &["RouteKey"]).expect("RouteKey");
        let (method, path) = key.split_once(' ').expect("RouteKey is `METHOD /path`");
        let integration = match get(p, "Target").and_then(tagged) {
            Some((tag, v)) if tag == "Sub" => v
                .as_str()
                .and_then(|s| s.strip_prefix("integrations/${"))
                .and_then(|s| s.strip_suffix('}'))
                .map(str::to_owned),
            _ => None,
        }
        .unwrap_or_else(|| panic!("{id:?}: Target must be !Sub integrations/${{<Integration>}}"));
        let ip = properties(t, &integration);
        assert!(is_ref_to(get(ip, "ApiId"), "Api"), "{integration}: ApiId");
        assert_eq!(str_at(ip, &["IntegrationType"]), Some("AWS_PROXY"));
        assert_eq!(str_at(ip, &["PayloadFormatVersion"]), Some("2.0"));
        let function = get(ip, "IntegrationUri")
            .and_then(get_att_arn)
            .unwrap_or_else(|| panic!("{integration}: IntegrationUri: !GetAtt <Function>.Arn"));
        let name = names
            .get(&function)
            .unwrap_or_else(|| panic!("{integration} integrates {function}, not a function"));
        out.push(route(method, path, name));
    }
    out.sort();
    out
}

/// Logical ids of the functions API Gateway may invoke (a `Lambda::Permission` for it).
fn invocable_by_api(t: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for res in resources(t).values() {
        if str_at(res, &["Type"]) != Some("AWS::Lambda::Permission") {
            continue;
        }
        let p = get(res, "Properties").expect("permission Properties");
        if str_at(p, &["Principal"]) != Some("apigateway.amazonaws.com")
            || str_at(p, &["Action"]) != Some("lambda:InvokeFunction")
        {
            continue;
        }
        if let Some((tag, v)) = get(p, "FunctionName").and_then(tagged) {
            if tag == "Ref" {
                out.insert(v.as_str().expect("function id").to_owned());
            }
        }
    }
    out
}

fn router_routes(table: &[RouterRoute]) -> Vec<Route> {
    let mut out: Vec<Route> = table.iter().map(|(m, p, f)| route(m, p, f)).collect();
    out.sort();
    // `/v1/keyboards/{keyboard}` and `.../readme` are one API Gateway route.
    out.dedup();
    out
}

/// Routes in one list and not in the other, as a readable error.
fn compare_routes(template: &[Route], router: &[Route]) -> Result<(), String> {
    let t: BTreeSet<&Route> = template.iter().collect();
    let r: BTreeSet<&Route> = router.iter().collect();
    let mut msg = String::new();
    for missing in r.difference(&t) {
        msg += &format!("  router route not in template.yaml: {missing}\n");
    }
    for extra in t.difference(&r) {
        msg += &format!("  template.yaml route not in the router: {extra}\n");
    }
    if msg.is_empty() {
        Ok(())
    } else {
        Err(msg)
    }
}

fn template_env(t: &Value) -> BTreeMap<String, BTreeSet<String>> {
    functions(t)
        .into_iter()
        .map(|(_, name, props)| {
            let vars = get(&props, "Environment")
                .and_then(|e| get(e, "Variables"))
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.keys()
                        .map(|k| k.as_str().expect("variable name").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (name, vars)
        })
        .collect()
}

/// Variables a function reads and the template does not set, or sets and nothing reads.
fn compare_env(
    template: &BTreeMap<String, BTreeSet<String>>,
    code: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), String> {
    let mut msg = String::new();
    let names: BTreeSet<&String> = template.keys().chain(code.keys()).collect();
    for f in names {
        let (Some(t), Some(c)) = (template.get(f), code.get(f)) else {
            msg += &format!("  function {f} is only in one of template.yaml and oven::config\n");
            continue;
        };
        for v in c.difference(t) {
            msg += &format!("  {f} reads {v} but template.yaml does not set it\n");
        }
        for v in t.difference(c) {
            msg += &format!("  template.yaml sets {v} on {f} but its code does not read it\n");
        }
    }
    if msg.is_empty() {
        Ok(())
    } else {
        Err(msg)
    }
}

#[test]
fn every_route_is_wired_to_its_function_and_nothing_else_is() {
    let t = load_template();
    let template = template_routes(&t);
    let router = router_routes(&router_table());
    if let Err(msg) = compare_routes(&template, &router) {
        panic!("template.yaml and the router disagree:\n{msg}");
    }
    let keys: BTreeSet<(&str, &str)> = template
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(keys.len(), template.len(), "a route key is wired twice");
    let allowed = invocable_by_api(&t);
    for (id, name, _) in functions(&t) {
        if template.iter().any(|r| r.function == name) {
            assert!(
                allowed.contains(&id),
                "no Lambda::Permission lets API Gateway invoke {id}"
            );
        }
    }
}

#[test]
fn route_check_catches_a_route_missing_on_either_side() {
    // The comparator on the real tables, each side losing one route in turn: it must name it.
    let t = load_template();
    for full in [template_routes(&t), router_routes(&router_table())] {
        for i in 0..full.len() {
            let mut fewer = full.clone();
            let gone = fewer.remove(i);
            let err = compare_routes(&full, &fewer).expect_err("route dropped from the router");
            assert!(err.contains(&format!("template.yaml route not in the router: {gone}")));
            let err = compare_routes(&fewer, &full).expect_err("route dropped from the template");
            assert!(err.contains(&format!("router route not in template.yaml: {gone}")));
        }
        let mut moved = full.clone();
        moved[0].function = "elsewhere".into();
        assert!(compare_routes(&moved, &full).is_err(), "wrong function");
    }
}

#[test]
fn every_function_gets_exactly_the_variables_its_code_reads() {
    let t = load_template();
    if let Err(msg) = compare_env(&template_env(&t), &code_env()) {
        panic!("template.yaml environments and oven::config disagree:\n{msg}");
    }
}

#[test]
fn env_check_catches_a_variable_missing_on_either_side() {
    let t = load_template();
    for full in [template_env(&t), code_env()] {
        for (f, vars) in &full {
            for v in vars {
                let mut less = full.clone();
                less.get_mut(f).unwrap().remove(v);
                let err = compare_env(&less, &full).expect_err("variable dropped from template");
                assert!(err.contains(&format!("{f} reads {v} but")), "{err}");
                let err = compare_env(&full, &less).expect_err("variable dropped from code");
                assert!(err.contains(&format!("sets {v} on {f} but")), "{err}");
            }
        }
    }
}

#[test]
fn compile_function_queues_are_wired_for_sqs() {
    let t = load_template();
    let compile = properties(&t, "CompileFunction");
    assert_eq!(str_at(compile, &["PackageType"]), Some("Image"));
    let timeout = number(compile, "Timeout");
    let events = get(compile, "Events").and_then(Value::as_mapping).unwrap();
    let mut queues = Vec::new();
    let mut schedules = Vec::new();
    for (name, ev) in events {
        let p = get(ev, "Properties").unwrap();
        if str_at(ev, &["Type"]) == Some("Schedule") {
            schedules.push(str_at(p, &["Schedule"]).map(str::to_owned));
            continue;
        }
        assert_eq!(str_at(ev, &["Type"]), Some("SQS"), "{name:?}");
        let types = get(p, "FunctionResponseTypes").and_then(Value::as_sequence);
        let partial = types.is_some_and(|t| {
            t.iter()
                .any(|x| x.as_str() == Some("ReportBatchItemFailures"))
        });
        assert!(partial, "{name:?} must report partial batch failures");
        let q = get(p, "Queue")
            .and_then(get_att_arn)
            .expect("Queue: !GetAtt X.Arn");
        let visibility = number(properties(&t, &q), "VisibilityTimeout");
        assert!(
            visibility >= 6 * timeout,
            "{q}: VisibilityTimeout {visibility} < 6 x compile Timeout {timeout}"
        );
        queues.push(q);
    }
    // The reaper runs every minute without traffic (the compile function tells a scheduled
    // event from an SQS batch).
    assert_eq!(schedules, [Some("rate(1 minute)".to_owned())]);
    // The main queue redrives to the DLQ, and the DLQ named to the code is consumed too.
    let dlq = get(properties(&t, "JobQueue"), "RedrivePolicy")
        .and_then(|r| get(r, "deadLetterTargetArn"))
        .and_then(get_att_arn)
        .expect("JobQueue redrives to a DLQ");
    let told = get(compile, "Environment")
        .and_then(|e| get(e, "Variables"))
        .and_then(|v| get(v, config::DLQ_ARN))
        .and_then(get_att_arn)
        .expect("OVEN_DLQ_ARN: !GetAtt <dlq>.Arn");
    assert_eq!(told, dlq);
    queues.sort();
    assert_eq!(queues, vec![dlq, "JobQueue".to_owned()]);
}

#[test]
fn http_functions_are_arm64_cargo_lambda_builds() {
    let t = load_template();
    for (id, name, props) in functions(&t) {
        if name == "compile" {
            continue;
        }
        let build = str_at(resource(&t, &id), &["Metadata", "BuildMethod"]);
        assert_eq!(build, Some("rust-cargolambda"), "{id}");
        assert_eq!(
            str_at(&props, &["Runtime"]),
            Some("provided.al2023"),
            "{id}"
        );
        let arch = get(&props, "Architectures").and_then(Value::as_sequence);
        let arch: Vec<_> = arch
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(arch, ["arm64"], "{id}");
        // The binary must exist: the package under functions/ declares it.
        let manifest = std::fs::read_to_string(format!(
            "{}/../functions/{name}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_else(|e| panic!("functions/{name}/Cargo.toml: {e}"));
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{id}");
    }
}

#[test]
fn dashboard_shows_every_metric_the_code_emits() {
    use oven::telemetry::{FailureClass, Metric, NAMESPACE};
    use std::time::Duration;
    let t = load_template();
    let body = match get(properties(&t, "Dashboard"), "DashboardBody").and_then(tagged) {
        Some((tag, v)) if tag == "Sub" => v
            .as_sequence()
            .and_then(|s| s.first())
            .and_then(Value::as_str)
            .expect("!Sub [body, vars]")
            .to_owned(),
        other => panic!("DashboardBody must be !Sub [body, vars], is {other:?}"),
    };
    for m in [
        Metric::JobSubmitted,
        Metric::CacheHit,
        Metric::JobFinished,
        Metric::QueueWait(Duration::ZERO),
        Metric::CompileDuration(Duration::ZERO),
        Metric::JobRequeued,
        Metric::JobDeadLettered,
        Metric::LeaseLost,
    ] {
        let series = format!("[\"{NAMESPACE}\", \"{}\"", m.name());
        assert!(body.contains(&series), "dashboard lacks {series}");
    }
    let failures = Metric::Failure(FailureClass::new("timeout"));
    let search = format!(
        "{{{NAMESPACE},Class}} MetricName=\\\"{}\\\"",
        failures.name()
    );
    assert!(body.contains(&search), "dashboard lacks {search}");
}

/// The job table as the DynamoDB adapter (`oven::adapters::aws::dynamo`) uses it: its index
/// name is the adapter's constant; the attribute names are the ones its items carry.
const TABLE_KEY: &str = "id";
const TABLE_TTL_ATTRIBUTE: &str = "expires_at_s";
const STATE_LEASE_INDEX: (&str, &str, &str) = (
    oven::adapters::aws::STATE_LEASE_INDEX,
    "state",
    "lease_until",
);

#[test]
fn job_table_matches_the_adapter() {
    let t = load_template();
    let table = properties(&t, "JobTable");
    assert_eq!(str_at(table, &["BillingMode"]), Some("PAY_PER_REQUEST"));
    assert_eq!(
        str_at(table, &["TimeToLiveSpecification", "AttributeName"]),
        Some(TABLE_TTL_ATTRIBUTE)
    );
    let key_schema = |v: &Value| -> Vec<(String, String)> {
        get(v, "KeySchema")
            .and_then(Value::as_sequence)
            .expect("KeySchema")
            .iter()
            .map(|k| {
                let name = str_at(k, &["AttributeName"]).expect("AttributeName");
                let kind = str_at(k, &["KeyType"]).expect("KeyType");
                (name.to_owned(), kind.to_owned())
            })
            .collect()
    };
    assert_eq!(key_schema(table), [(TABLE_KEY.into(), "HASH".into())]);
    let (index, hash, range) = STATE_LEASE_INDEX;
    let gsis = get(table, "GlobalSecondaryIndexes").and_then(Value::as_sequence);
    let gsi = gsis
        .into_iter()
        .flatten()
        .find(|g| str_at(g, &["IndexName"]) == Some(index))
        .unwrap_or_else(|| panic!("JobTable lacks index {index}"));
    assert_eq!(
        key_schema(gsi),
        [(hash.into(), "HASH".into()), (range.into(), "RANGE".into())]
    );
    // The reaper reads whole jobs from the index.
    assert_eq!(str_at(gsi, &["Projection", "ProjectionType"]), Some("ALL"));
    let types: BTreeMap<&str, &str> = get(table, "AttributeDefinitions")
        .and_then(Value::as_sequence)
        .expect("AttributeDefinitions")
        .iter()
        .filter_map(|d| {
            Some((
                str_at(d, &["AttributeName"])?,
                str_at(d, &["AttributeType"])?,
            ))
        })
        .collect();
    assert_eq!(
        types,
        BTreeMap::from([(TABLE_KEY, "S"), (hash, "S"), (range, "N")])
    );
    // The compile role may query that index and nothing wider.
    let policy = serde_yaml_ng::to_string(properties(&t, "CompileRole")).unwrap();
    assert!(policy.contains(&format!("${{JobTable.Arn}}/index/{index}")));
    assert!(!policy.contains("dynamodb:Scan") && !policy.contains("dynamodb:*"));
}

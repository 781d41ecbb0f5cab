//! Logs and metrics, the same in every function and in the local runner.
//!
//! - [`init`] installs a JSON `tracing` subscriber on stdout: one JSON object per event, with the
//!   fields of the enclosing spans, so every line logged inside [`job_span`] carries `job_id`
//!   and CloudWatch Logs Insights can follow one job across submit, compile and download.
//! - [`Metric`] / [`emit`] write CloudWatch Embedded Metric Format (EMF) lines to stdout. Lambda
//!   ships stdout to CloudWatch Logs, which turns each such line into metric data points: no
//!   metrics API call, no extra permission. Locally they are just JSON lines in the log.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

use crate::config;
use crate::job::JobId;
use crate::time::Millis;

/// CloudWatch namespace of Oven's own metrics (the dashboard in `template.yaml` reads it).
pub const NAMESPACE: &str = "Oven";

/// Installs the JSON log subscriber and turns EMF metrics on. The filter comes from
/// [`config::LOG`] (default `info`).
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init() {
    set_metrics(true);
    let filter = std::env::var(config::LOG)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_ansi(false)
        .try_init();
}

/// How the local runner (`oven serve`) writes its log to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stdout is a terminal.
    Text,
    /// One JSON object per line, as [`init`] writes on AWS (without the metrics).
    Json,
}

/// Installs the log subscriber of the local runner. The filter is `RUST_LOG` if set, else
/// `default_filter` (`tracing_subscriber::EnvFilter` syntax). Text is coloured only when
/// stdout is a terminal: a log redirected to a file or a pipe gets no escape codes.
pub fn init_local(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
}

/// The span every piece of work on one job runs in: its `job_id` is then a field of every log
/// line emitted inside it.
pub fn job_span(id: JobId) -> tracing::Span {
    tracing::info_span!("job", job_id = %id)
}

/// A measurement Oven reports. Each variant is one EMF metric with a fixed name and unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A job was accepted by `POST /v1/compile`.
    JobSubmitted,
    /// A request was answered from an identical earlier build.
    CacheHit,
    /// A compile ended with firmware.
    JobFinished,
    /// Time from submission to the start of its compile.
    QueueWait(Duration),
    /// Wall time of one compile (the `qmk compile` child, not the whole invocation).
    CompileDuration(Duration),
    /// The reaper queued a job again: its worker stopped renewing the lease (died, hung, or
    /// `oven serve` restarted).
    JobRequeued,
    /// A job's message reached the dead-letter queue and the job was failed.
    JobDeadLettered,
    /// A worker stopped a build because its lease was taken over or ran out.
    LeaseLost,
    /// Wall time of one phase of a finished job (`queue`, `prepare`, `startup`, `generate`,
    /// `compile`, `link`, `store`, `source_archive`: the fields of [`crate::job::Phases`]), with
    /// the phase as the `Phase` dimension.
    PhaseDuration(&'static str, Duration),
    /// A job ended `failed`; the class is the result's `failure` (`compile_error`, `timeout`,
    /// `dead_letter`, ...), a dimension of the metric.
    Failure(FailureClass),
}

/// A failure class fit to be a metric dimension: `[a-z0-9_]`, at most 48 bytes. Anything else
/// becomes `other`, so a surprising string cannot create unbounded metric series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureClass(String);

impl FailureClass {
    pub fn new(class: &str) -> Self {
        let ok = !class.is_empty()
            && class.len() <= 48
            && class
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        FailureClass(if ok { class } else { "other" }.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Metric {
    /// The metric's name in CloudWatch.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::JobSubmitted => "JobsSubmitted",
            Metric::CacheHit => "CacheHits",
            Metric::JobFinished => "JobsFinished",
            Metric::QueueWait(_) => "QueueWait",
            Metric::CompileDuration(_) => "CompileDuration",
            Metric::PhaseDuration(..) => "PhaseDuration",
            Metric::Failure(_) => "Failures",
            Metric::JobRequeued => "JobsRequeued",
            Metric::JobDeadLettered => "JobsDeadLettered",
            Metric::LeaseLost => "LeasesLost",
        }
    }

    /// The CloudWatch unit (one of the names EMF accepts).
    pub fn unit(&self) -> &'static str {
        match self {
            Metric::QueueWait(_) | Metric::CompileDuration(_) | Metric::PhaseDuration(..) => {
                "Milliseconds"
            }
            _ => "Count",
        }
    }

    fn value(&self) -> Value {
        match self {
            Metric::QueueWait(d) | Metric::CompileDuration(d) | Metric::PhaseDuration(_, d) => {
                json!(d.as_secs_f64() * 1000.0)
            }
            _ => json!(1),
        }
    }

    fn dimensions(&self) -> Vec<(&'static str, &str)> {
        match self {
            Metric::Failure(class) => vec![("Class", class.as_str())],
            Metric::PhaseDuration(phase, _) => vec![("Phase", phase)],
            _ => Vec::new(),
        }
    }

    /// The EMF document for this measurement taken at `at`.
    pub fn to_emf(&self, at: Millis) -> Value {
        let dims = self.dimensions();
        let dim_names: Vec<&str> = dims.iter().map(|(k, _)| *k).collect();
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": at.0,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dim_names],
                    "Metrics": [{"Name": self.name(), "Unit": self.unit()}],
                }],
            }),
        );
        for (k, v) in dims {
            doc.insert(k.into(), json!(v));
        }
        doc.insert(self.name().into(), self.value());
        Value::Object(doc)
    }
}

/// Writes `metric`'s EMF line to `out`.
pub fn write_emf(out: &mut impl Write, metric: &Metric, at: Millis) -> std::io::Result<()> {
    let line = metric.to_emf(at).to_string();
    writeln!(out, "{line}")
}

/// Whether [`emit`] writes anything: on in the Lambda functions ([`init`]), off in the local
/// runner, whose stdout is a terminal rather than CloudWatch.
static METRICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns EMF metrics on or off for this process.
pub fn set_metrics(enabled: bool) {
    METRICS.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Reports `metric` now, as one EMF line on stdout, when metrics are on. Metrics are best
/// effort: a failed write is logged, never returned.
pub fn emit(metric: Metric) {
    if !METRICS.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    if let Err(err) = write_emf(&mut lock, &metric, Millis::now()) {
        drop(lock);
        tracing::warn!(metric = metric.name(), %err, "could not write metric");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emf_line(metric: &Metric) -> Value {
        let mut buf = Vec::new();
        write_emf(&mut buf, metric, Millis(1_763_700_000_123)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
        serde_json::from_str(&text).unwrap()
    }

    /// Checks the rules of the EMF specification that CloudWatch enforces: `_aws.Timestamp` in
    /// ms, one directive with a namespace, dimension sets naming root string members, metric
    /// definitions naming root numeric members.
    fn assert_valid_emf(doc: &Value) {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{doc}");
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        let d = &directives[0];
        assert_eq!(d["Namespace"], NAMESPACE);
        for set in d["Dimensions"].as_array().unwrap() {
            let set = set.as_array().unwrap();
            assert!(set.len() <= 30);
            for name in set {
                let name = name.as_str().unwrap();
                assert!(
                    doc[name].is_string(),
                    "dimension {name} not a root string: {doc}"
                );
            }
        }
        let metrics = d["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty());
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(
                doc[name].is_number(),
                "metric {name} not a root number: {doc}"
            );
            let unit = m["Unit"].as_str().unwrap();
            assert!(["Count", "Milliseconds"].contains(&unit), "{unit}");
        }
    }

    #[test]
    fn counter_is_emf_without_dimensions() {
        let doc = emf_line(&Metric::JobSubmitted);
        assert_valid_emf(&doc);
        assert_eq!(doc["_aws"]["Timestamp"], 1_763_700_000_123i64);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0],
            json!({"Name": "JobsSubmitted", "Unit": "Count"})
        );
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        assert_eq!(doc["JobsSubmitted"], 1);
    }

    #[test]
    fn durations_are_milliseconds() {
        let doc = emf_line(&Metric::CompileDuration(Duration::from_millis(15_250)));
        assert_valid_emf(&doc);
        assert_eq!(doc["CompileDuration"].as_f64(), Some(15_250.0));
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
        let doc = emf_line(&Metric::QueueWait(Duration::from_micros(2_500)));
        assert_valid_emf(&doc);
        assert_eq!(doc["QueueWait"].as_f64(), Some(2.5));
    }

    #[test]
    fn failures_carry_their_class_as_a_dimension() {
        let doc = emf_line(&Metric::Failure(FailureClass::new("compile_error")));
        assert_valid_emf(&doc);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Class"]])
        );
        assert_eq!(doc["Class"], "compile_error");
        assert_eq!(doc["Failures"], 1);
    }

    #[test]
    fn phases_are_one_metric_with_the_phase_as_a_dimension() {
        let doc = emf_line(&Metric::PhaseDuration("link", Duration::from_millis(1_250)));
        assert_valid_emf(&doc);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Phase"]])
        );
        assert_eq!(doc["Phase"], "link");
        assert_eq!(doc["PhaseDuration"].as_f64(), Some(1_250.0));
    }

    #[test]
    fn odd_failure_classes_collapse_to_other() {
        for bad in [
            "",
            "Compile Error",
            "x".repeat(49).as_str(),
            "a\"b",
            "dead-letter",
        ] {
            assert_eq!(FailureClass::new(bad).as_str(), "other", "{bad:?}");
        }
        assert_eq!(FailureClass::new("timeout").as_str(), "timeout");
    }

    #[test]
    fn every_metric_renders_valid_emf() {
        for m in [
            Metric::JobSubmitted,
            Metric::CacheHit,
            Metric::JobFinished,
            Metric::QueueWait(Duration::ZERO),
            Metric::CompileDuration(Duration::from_secs(600)),
            Metric::PhaseDuration("generate", Duration::from_millis(2_500)),
            Metric::Failure(FailureClass::new("dead_letter")),
            Metric::JobRequeued,
            Metric::JobDeadLettered,
            Metric::LeaseLost,
        ] {
            assert_valid_emf(&emf_line(&m));
        }
    }

    #[test]
    fn job_span_puts_the_job_id_on_every_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        // Same layer settings as `init`, writing to a buffer instead of stdout.
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let id = JobId::new();
        tracing::subscriber::with_default(subscriber, || {
            let _g = job_span(id).entered();
            tracing::info!(step = "compile", "started");
            tracing::warn!("slow");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_eq!(line["span"]["job_id"], id.to_string(), "{line}");
            assert_eq!(line["span"]["name"], "job");
        }
        assert_eq!(lines[0]["fields"]["message"], "started");
        assert_eq!(lines[0]["fields"]["step"], "compile");
        assert_eq!(lines[1]["level"], "WARN");
    }
}

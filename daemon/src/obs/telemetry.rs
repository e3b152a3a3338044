//! Logs, traces and OpenTelemetry export for `agorad`.
//!
//! Logs go to stderr and to a daily-rotated file, through one filter that `agora node
//! log-level` replaces at run time ([`LogControl`]). When an OTLP endpoint is configured,
//! Agora's spans (IPC requests, publish, search, DHT queries, gossip validation, sync, fetch
//! per provider) are exported over OTLP/HTTP (protobuf) by a batch processor on its own
//! thread, and the node's metrics by a periodic reader. Without an endpoint no exporter,
//! thread or layer exists at all.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, reload};

/// Daily log files kept in the data directory.
const LOG_FILES_KEPT: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot open the log file in {dir}: {reason}")]
    LogFile { dir: String, reason: String },
    #[error("cannot set up OTLP export to {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Changes the log filter of the running daemon.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Arc<Mutex<String>>,
}

impl LogControl {
    /// Replaces the filter; an invalid one changes nothing.
    pub fn set(&self, filter: &str) -> Result<(), TelemetryError> {
        let parsed = parse_filter(filter)?;
        self.handle
            .reload(parsed)
            .map_err(|e| TelemetryError::Filter {
                filter: filter.into(),
                reason: e.to_string(),
            })?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = filter.to_owned();
        Ok(())
    }

    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn parse_filter(filter: &str) -> Result<EnvFilter, TelemetryError> {
    let err = |reason: String| TelemetryError::Filter {
        filter: filter.into(),
        reason,
    };
    if filter.trim().is_empty() {
        return Err(err("empty".into()));
    }
    let parsed = EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map_err(|e| err(e.to_string()))?;
    // The resolver logs each step of every solve at info: a node's info log says what the
    // node did, so its steps show only when asked for by name.
    if filter.contains("pubgrub") {
        return Ok(parsed);
    }
    Ok(parsed.add_directive("pubgrub=warn".parse().expect("a valid directive")))
}

/// The installed logging and export pipeline; [`shutdown`](Self::shutdown) flushes it.
pub struct Telemetry {
    pub log: LogControl,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. Call outside the async runtime: the OTLP exporters'
    /// blocking HTTP clients must not be created on a runtime thread.
    pub fn init(
        log_filter: &str,
        log_dir: &Path,
        otlp_endpoint: Option<&str>,
        instance: &str,
    ) -> Result<Self, TelemetryError> {
        let file_log = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("agorad")
            .filename_suffix("log")
            .max_log_files(LOG_FILES_KEPT)
            .build(log_dir)
            .map_err(|e| TelemetryError::LogFile {
                dir: log_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        let (filter, handle) = reload::Layer::new(parse_filter(log_filter)?);
        // Colours only for a person at a terminal: never in the journal, a file or a pipe.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let logs = fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .and_then(fmt::layer().with_ansi(false).with_writer(file_log))
            .with_filter(filter);

        let (tracer, meter) = match otlp_endpoint {
            Some(endpoint) => {
                let (t, m) = otlp(endpoint, instance).map_err(|reason| TelemetryError::Otlp {
                    endpoint: endpoint.into(),
                    reason,
                })?;
                (Some(t), Some(m))
            }
            None => (None, None),
        };
        // Agora's own spans at info; libp2p's internals stay out of traces.
        let traces = tracer.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("agora"))
                .with_filter(
                    Targets::new()
                        .with_target("agora_daemon", Level::INFO)
                        .with_target("agorad", Level::INFO),
                )
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .try_init()
            .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
        Ok(Self {
            log: LogControl {
                handle,
                current: Arc::new(Mutex::new(log_filter.to_owned())),
            },
            tracer,
            meter,
        })
    }

    /// The OpenTelemetry meter, when export is on.
    pub fn meter(&self) -> Option<Meter> {
        self.meter.as_ref().map(|m| m.meter("agora"))
    }

    /// Exports what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
        if let Some(m) = self.meter
            && let Err(e) = m.shutdown()
        {
            eprintln!("warning: flushing metrics failed: {e}");
        }
    }
}

fn otlp(endpoint: &str, instance: &str) -> Result<(SdkTracerProvider, SdkMeterProvider), String> {
    let resource = Resource::builder()
        .with_service_name("agorad")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_owned()),
        ])
        .build();
    let spans = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .map_err(|e| e.to_string())?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/metrics"))
        .build()
        .map_err(|e| e.to_string())?;
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer, meter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_before_use() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("agora_daemon=debug,libp2p=warn").is_ok());
        let e = parse_filter("").unwrap_err();
        assert_eq!(e.to_string(), "invalid log filter \"\": empty");
        let e = parse_filter("agora_daemon=loud").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid log filter \"agora_daemon=loud\": "),
            "{e}"
        );
    }
}

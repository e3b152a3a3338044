//! Observability: the Prometheus metrics and the OTLP exporter ([`metrics`]), tracing and its
//! OTLP layer ([`telemetry`]), and the registry's counters ([`counters`]). It imports nothing
//! of the daemon: each layer hands it what it has to report.

mod counters;
pub mod metrics;
pub mod telemetry;

pub use counters::RegistryStats;
pub use metrics::Metrics;

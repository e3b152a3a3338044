//! Metrics: Agora's own counters, gauges and histograms and libp2p's, in one Prometheus
//! registry per node. Counters live where the work happens (a [`Source`], which the registry
//! is) and are read at scrape time by a collector, so nothing is counted twice; histograms are
//! recorded here. When OpenTelemetry export is on ([`crate::obs::telemetry`]), the same values go
//! out over OTLP as well. This module knows nothing of the rest of the daemon.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram as OtelHistogram, Meter};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as PromRegistry;

/// Counters and gauges kept where the work happens, read at each scrape and each OTLP
/// collection: (name without `agora_`, help, value).
pub trait Source: Send + Sync {
    fn counters(&self) -> Vec<(&'static str, &'static str, u64)>;
    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)>;
}

/// The media type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The gauges the event loop keeps in [`Metrics`], in the order of its fields `peers`,
/// `routing_table` and `dht_records`: (name without `agora_`, help).
const LIVE_GAUGES: [(&str, &str); 3] = [
    ("peers", "Connected peers"),
    ("routing_table_peers", "Peers in the Kademlia routing table"),
    (
        "dht_records",
        "Records in the DHT store, each put again at every replication round",
    ),
];

/// Labels of the DHT query latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// get_record, put_record, get_providers, start_providing, bootstrap.
    pub kind: &'static str,
    /// ok or error.
    pub outcome: &'static str,
}

/// Labels of the IPC request histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: &'static str,
    pub outcome: &'static str,
}

/// One node's metrics.
pub struct Metrics {
    prom: Mutex<PromRegistry>,
    /// libp2p's own swarm, Kademlia, Identify, Ping and Gossipsub event metrics.
    pub libp2p: libp2p::metrics::Metrics,
    /// Connected peers, kept by the event loop.
    pub peers: Gauge,
    /// Peers in the Kademlia routing table, kept by the event loop.
    pub routing_table: Gauge,
    /// Records in the DHT store (what each replication round puts again), kept by the
    /// event loop.
    pub dht_records: Gauge,
    /// Swarm events the event loop has handled.
    pub swarm_events: Counter,
    /// Commands from `NetworkHandle`s the event loop has handled.
    pub commands: Counter,
    /// DHT records peers have put to this node (publications and every replication round).
    pub dht_records_received: Counter,
    /// Gossip messages dropped because their sender was over its gossip budget.
    pub gossip_over_budget: Counter,
    /// Of those, records byte-identical to the copy this node stores, dropped by the event
    /// loop before any validation: a replication round's copies of what the node holds.
    pub dht_records_unchanged: Counter,
    search_seconds: Histogram,
    publish_seconds: Histogram,
    fetch_seconds: Histogram,
    fetch_throughput: Histogram,
    dht_query_seconds: Family<QueryLabels, Histogram>,
    ipc_seconds: Family<RequestLabels, Histogram>,
    otel: OnceLock<OtelInstruments>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 50 µs .. ~26 s
    exponential_buckets(0.000_05, 2.0, 20)
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut prom = PromRegistry::default();
        let libp2p = libp2p::metrics::Metrics::new(&mut prom);
        let agora = prom.sub_registry_with_prefix("agora");
        /// Registers `metric` under `name` and hands back a handle to it.
        fn add<M>(reg: &mut PromRegistry, name: &str, help: &str, metric: M) -> M
        where
            M: prometheus_client::registry::Metric + Clone,
        {
            reg.register(name, help, metric.clone());
            metric
        }
        let latency = || Histogram::new(seconds_buckets());
        let [peers, routing_table, dht_records] =
            LIVE_GAUGES.map(|(name, help)| add(agora, name, help, Gauge::default()));
        let swarm_events = add(
            agora,
            "event_loop_swarm_events",
            "Swarm events the network event loop has handled",
            Counter::default(),
        );
        let commands = add(
            agora,
            "event_loop_commands",
            "Commands the network event loop has handled",
            Counter::default(),
        );
        let dht_records_received = add(
            agora,
            "dht_records_received",
            "DHT records peers have put to this node",
            Counter::default(),
        );
        let gossip_over_budget = add(
            agora,
            "gossip_over_budget",
            "Gossip messages dropped unchecked because their sender was over its budget",
            Counter::default(),
        );
        let dht_records_unchanged = add(
            agora,
            "dht_records_unchanged",
            "DHT records put to this node that are identical to its stored copy (dropped unvalidated)",
            Counter::default(),
        );
        let search_seconds = add(
            agora,
            "search_seconds",
            "Local catalog search latency",
            latency(),
        );
        let publish_seconds = add(
            agora,
            "publish_seconds",
            "Time to publish a release (pack, sign, store, announce)",
            latency(),
        );
        let fetch_seconds = add(
            agora,
            "fetch_seconds",
            "Time to fetch an archive from the network",
            latency(),
        );
        let fetch_throughput = add(
            agora,
            "fetch_throughput_bytes_per_second",
            "Throughput of each archive fetched from the network",
            Histogram::new(exponential_buckets(64.0 * 1024.0, 2.0, 16)),
        );
        let dht_query_seconds = add(
            agora,
            "dht_query_seconds",
            "Kademlia query latency by kind and outcome",
            Family::<QueryLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(seconds_buckets())
            }),
        );
        let ipc_seconds = add(
            agora,
            "ipc_request_seconds",
            "IPC request latency by request and outcome",
            Family::<RequestLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(seconds_buckets())
            }),
        );
        Arc::new(Self {
            prom: Mutex::new(prom),
            libp2p,
            peers,
            routing_table,
            dht_records,
            swarm_events,
            commands,
            dht_records_received,
            gossip_over_budget,
            dht_records_unchanged,
            search_seconds,
            publish_seconds,
            fetch_seconds,
            fetch_throughput,
            dht_query_seconds,
            ipc_seconds,
            otel: OnceLock::new(),
        })
    }

    /// Gives `f` the Prometheus registry, to register more metrics (the swarm's bandwidth,
    /// gossipsub's internals) while the node is built.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut PromRegistry) -> T) -> T {
        f(&mut self.prom.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds `source`'s counters and gauges, read at each scrape while it lives.
    pub fn collect(&self, source: Weak<dyn Source>) {
        let collector = SourceCollector(source);
        self.with_registry(|r| {
            r.sub_registry_with_prefix("agora")
                .register_collector(Box::new(collector))
        });
    }

    /// Everything, as OpenMetrics text (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.with_registry(|r| prometheus_client::encoding::text::encode(&mut out, r))
            .expect("writing to a String does not fail");
        out
    }

    pub fn observe_search(&self, took: Duration) {
        self.search_seconds.observe(took.as_secs_f64());
        if let Some(o) = self.otel.get() {
            o.search.record(took.as_secs_f64(), &[]);
        }
    }

    pub fn observe_publish(&self, took: Duration) {
        self.publish_seconds.observe(took.as_secs_f64());
        if let Some(o) = self.otel.get() {
            o.publish.record(took.as_secs_f64(), &[]);
        }
    }

    pub fn observe_fetch(&self, took: Duration, bytes: u64) {
        let secs = took.as_secs_f64().max(1e-9);
        self.fetch_seconds.observe(secs);
        self.fetch_throughput.observe(bytes as f64 / secs);
        if let Some(o) = self.otel.get() {
            o.fetch.record(secs, &[]);
        }
    }

    pub fn observe_query(&self, kind: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.dht_query_seconds
            .get_or_create(&QueryLabels { kind, outcome })
            .observe(took.as_secs_f64());
        if let Some(o) = self.otel.get() {
            o.dht_query.record(
                took.as_secs_f64(),
                &[
                    KeyValue::new("kind", kind),
                    KeyValue::new("outcome", outcome),
                ],
            );
        }
    }

    pub fn observe_request(&self, request: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.ipc_seconds
            .get_or_create(&RequestLabels { request, outcome })
            .observe(took.as_secs_f64());
        if let Some(o) = self.otel.get() {
            o.ipc.record(
                took.as_secs_f64(),
                &[
                    KeyValue::new("request", request),
                    KeyValue::new("outcome", outcome),
                ],
            );
        }
    }

    /// Sends this node's metrics over OpenTelemetry too: histograms as they are recorded,
    /// counters and gauges each time the meter's reader collects.
    pub fn export_to(self: &Arc<Self>, meter: &Meter, source: Weak<dyn Source>) {
        let histogram = |name: &'static str, help: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .build()
        };
        let _ = self.otel.set(OtelInstruments {
            search: histogram("agora.search.duration", "Local catalog search latency"),
            publish: histogram("agora.publish.duration", "Time to publish a release"),
            fetch: histogram("agora.fetch.duration", "Time to fetch an archive"),
            dht_query: histogram("agora.dht.query.duration", "Kademlia query latency"),
            ipc: histogram("agora.ipc.request.duration", "IPC request latency"),
        });
        let names = source.upgrade().map(|s| s.counters()).unwrap_or_default();
        for (name, help, _) in names {
            let source = source.clone();
            meter
                .u64_observable_counter(format!("agora.{name}"))
                .with_description(help)
                .with_callback(move |obs| {
                    if let Some(source) = source.upgrade()
                        && let Some((_, _, v)) = source.counters().into_iter().find(|c| c.0 == name)
                    {
                        obs.observe(v, &[]);
                    }
                })
                .build();
        }
        let me = Arc::downgrade(self);
        meter
            .i64_observable_gauge("agora.gauges")
            .with_description("Peers, routing table, catalog and cache sizes (label: name)")
            .with_callback(move |obs| {
                let (Some(me), Some(source)) = (me.upgrade(), source.upgrade()) else {
                    return;
                };
                for (name, _, v) in me.live_gauges().into_iter().chain(source.gauges()) {
                    obs.observe(v, &[KeyValue::new("name", name)]);
                }
            })
            .build();
    }

    /// The gauges kept here (by the event loop): (name without `agora_`, help, value).
    fn live_gauges(&self) -> [(&'static str, &'static str, i64); 3] {
        let values = [&self.peers, &self.routing_table, &self.dht_records].map(Gauge::get);
        std::array::from_fn(|i| (LIVE_GAUGES[i].0, LIVE_GAUGES[i].1, values[i]))
    }
}

struct OtelInstruments {
    search: OtelHistogram<f64>,
    publish: OtelHistogram<f64>,
    fetch: OtelHistogram<f64>,
    dht_query: OtelHistogram<f64>,
    ipc: OtelHistogram<f64>,
}

struct SourceCollector(Weak<dyn Source>);

impl std::fmt::Debug for SourceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCollector").finish_non_exhaustive()
    }
}

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.upgrade() else {
            return Ok(());
        };
        for (name, help, value) in source.counters() {
            let metric = ConstCounter::new(value);
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode(e)?;
        }
        for (name, help, value) in source.gauges() {
            let metric = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode(e)?;
        }
        Ok(())
    }
}

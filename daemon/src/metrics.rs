//! Metrics: Agora's own counters, gauges and histograms and libp2p's, in one Prometheus
//! registry per node. Counters live where the work happens (the registry's
//! [`RegistryStats`]) and are read at scrape time by a collector, so nothing is counted
//! twice; histograms are recorded here. When OpenTelemetry export is on
//! ([`crate::telemetry`]), the same values go out over OTLP as well.

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

use crate::registry::{Registry, RegistryStats};

/// The media type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        let peers = add(agora, "peers", "Connected peers", Gauge::default());
        let routing_table = add(
            agora,
            "routing_table_peers",
            "Peers in the Kademlia routing table",
            Gauge::default(),
        );
        let dht_records = add(
            agora,
            "dht_records",
            "Records in the DHT store, each put again at every replication round",
            Gauge::default(),
        );
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

    /// Adds the registry's counters and catalog gauges, read at each scrape.
    pub fn collect_registry(&self, registry: &Arc<Registry>) {
        let collector = RegistryCollector(Arc::downgrade(registry));
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
    pub fn export_to(self: &Arc<Self>, meter: &Meter, registry: &Arc<Registry>) {
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
        for (name, help, _) in counters(&RegistryStats::default()) {
            let reg = Arc::downgrade(registry);
            meter
                .u64_observable_counter(format!("agora.{name}"))
                .with_description(help)
                .with_callback(move |obs| {
                    if let Some(reg) = reg.upgrade()
                        && let Some((_, _, v)) =
                            counters(&reg.stats).into_iter().find(|c| c.0 == name)
                    {
                        obs.observe(v, &[]);
                    }
                })
                .build();
        }
        let me = Arc::downgrade(self);
        let reg = Arc::downgrade(registry);
        meter
            .i64_observable_gauge("agora.gauges")
            .with_description("Peers, routing table, catalog and cache sizes (label: name)")
            .with_callback(move |obs| {
                let (Some(me), Some(reg)) = (me.upgrade(), reg.upgrade()) else {
                    return;
                };
                for (name, _, v) in gauges(&me, &reg) {
                    obs.observe(v, &[KeyValue::new("name", name)]);
                }
            })
            .build();
    }
}

struct OtelInstruments {
    search: OtelHistogram<f64>,
    publish: OtelHistogram<f64>,
    fetch: OtelHistogram<f64>,
    dht_query: OtelHistogram<f64>,
    ipc: OtelHistogram<f64>,
}

/// The registry's counters: (name without `agora_` and `_total`, help, value).
pub fn counters(s: &RegistryStats) -> [(&'static str, &'static str, u64); 21] {
    use std::sync::atomic::Ordering::Relaxed;
    let v = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    [
        (
            "gossip_accepted",
            "Gossip messages accepted",
            v(&s.gossip_accepted),
        ),
        (
            "gossip_rejected",
            "Gossip messages rejected as invalid",
            v(&s.gossip_rejected),
        ),
        (
            "gossip_ignored",
            "Gossip messages ignored (duplicates, valid records this node's rules refuse)",
            v(&s.gossip_ignored),
        ),
        (
            "records_stored",
            "Records admitted from the DHT",
            v(&s.records_stored),
        ),
        (
            "records_refused",
            "Records refused from the DHT",
            v(&s.records_refused),
        ),
        (
            "rollbacks_refused",
            "Records refused as rollbacks",
            v(&s.rollbacks_refused),
        ),
        (
            "equivocations",
            "Second records seen for one version",
            v(&s.equivocations),
        ),
        (
            "publisher_over_budget",
            "Gossiped records and heads ignored because their key was over its budget",
            v(&s.publisher_over_budget),
        ),
        (
            "chunks_served",
            "Archive chunks served to peers",
            v(&s.chunks_served),
        ),
        (
            "bytes_served",
            "Archive bytes served to peers",
            v(&s.bytes_served),
        ),
        (
            "bytes_fetched",
            "Archive bytes fetched from peers",
            v(&s.bytes_fetched),
        ),
        (
            "syncs_completed",
            "Catalog syncs completed",
            v(&s.syncs_completed),
        ),
        (
            "sync_ids_listed",
            "Record ids peers listed in syncs",
            v(&s.sync_ids_listed),
        ),
        (
            "records_synced",
            "Records admitted through sync",
            v(&s.records_synced),
        ),
        ("searches", "Catalog searches", v(&s.searches)),
        (
            "publishes",
            "Releases published by this node",
            v(&s.publishes),
        ),
        (
            "fetches",
            "Archives fetched from the network",
            v(&s.fetches),
        ),
        (
            "cache_hits",
            "Archive requests answered from the local store",
            v(&s.cache_hits),
        ),
        (
            "cache_misses",
            "Archive requests that needed the network",
            v(&s.cache_misses),
        ),
        (
            "peers_banned",
            "Peers banned for serving bad data",
            v(&s.peers_banned),
        ),
        (
            "blobs_damaged",
            "Archives whose files the disk damaged, dropped and fetched again if kept here",
            v(&s.blobs_damaged),
        ),
    ]
}

/// Point-in-time values: (name without `agora_`, help, value).
pub fn gauges(m: &Metrics, r: &Registry) -> [(&'static str, &'static str, i64); 8] {
    let usage = r.blobs.usage();
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    [
        ("peers", "Connected peers", m.peers.get()),
        (
            "routing_table_peers",
            "Peers in the routing table",
            m.routing_table.get(),
        ),
        (
            "dht_records",
            "Records in the DHT store",
            m.dht_records.get(),
        ),
        (
            "catalog_records",
            "Records in the catalog",
            n(r.catalog.record_count() as u64),
        ),
        (
            "packages",
            "Packages with an installable release",
            n(r.catalog.package_count() as u64),
        ),
        (
            "cache_bytes",
            "Bytes of fetched archives kept",
            n(usage.cached_bytes),
        ),
        (
            "cache_quota_bytes",
            "Quota for fetched archives",
            n(usage.quota),
        ),
        (
            "store_bytes",
            "Bytes of all archives kept (published, pinned, fetched)",
            n(usage.cached_bytes + usage.kept_bytes),
        ),
    ]
}

#[derive(Debug)]
struct RegistryCollector(Weak<Registry>);

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(reg) = self.0.upgrade() else {
            return Ok(());
        };
        for (name, help, value) in counters(&reg.stats) {
            let metric = ConstCounter::new(value);
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode(e)?;
        }
        // peers, routing_table_peers and dht_records are registered as live gauges already.
        let me = reg.network().metrics();
        for (name, help, value) in gauges(&me, &reg).into_iter().skip(3) {
            let metric = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode(e)?;
        }
        Ok(())
    }
}

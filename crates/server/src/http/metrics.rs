//! Prometheus metrics: request counts and latency histograms by method,
//! route template (never the raw path, so cardinality stays bounded) and
//! status code, the expiry of the server's certificates, notifier
//! deliveries, and the fleet — clusters by state; per cluster whether it
//! is connected, its nodes Ready and not, its capacity and allocatable
//! (`cpu`, `memory`, `pods` only, so a cluster adds a fixed number of
//! series); alert rules firing by severity — from the store's view every
//! replica keeps, so any replica answers the same. Served as text at
//! `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: String,
    subject: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    cluster: String,
    ready: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    cluster: String,
    resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The fleet's gauges, filled afresh at each scrape.
#[derive(Debug, Default)]
struct FleetGauges {
    clusters: Family<StateLabels, Gauge>,
    connected: Family<ClusterLabels, Gauge>,
    nodes: Family<NodeLabels, Gauge>,
    capacity: Family<ResourceLabels, FloatGauge>,
    allocatable: Family<ResourceLabels, FloatGauge>,
    firing: Family<SeverityLabels, Gauge>,
}

/// The resources the fleet gauges show.
const FLEET_RESOURCES: [&str; 3] = ["cpu", "memory", "pods"];

impl FleetGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "clusters",
            "Clusters by state (Active, Unavailable, Pending)",
            self.clusters.clone(),
        );
        registry.register(
            "cluster_connected",
            "Whether the cluster's agent is connected (1) or not (0)",
            self.connected.clone(),
        );
        registry.register(
            "cluster_nodes",
            "The cluster's nodes, Ready or not",
            self.nodes.clone(),
        );
        registry.register(
            "cluster_capacity",
            "The cluster's summed node capacity (cores, bytes, pods)",
            self.capacity.clone(),
        );
        registry.register(
            "cluster_allocatable",
            "The cluster's summed allocatable resources (cores, bytes, pods)",
            self.allocatable.clone(),
        );
        registry.register(
            "alert_rules_firing",
            "Alert rules firing, by severity",
            self.firing.clone(),
        );
    }

    fn fill(&self, fleet: &crate::controller::alerts::view::Fleet) {
        self.clusters.clear();
        self.connected.clear();
        self.nodes.clear();
        self.capacity.clear();
        self.allocatable.clear();
        self.firing.clear();
        for state in ["Active", "Unavailable", "Pending"] {
            let _ = self.clusters.get_or_create(&StateLabels {
                state: state.into(),
            });
        }
        for (key, c, _) in fleet.clusters.items() {
            let cluster = key.rsplit('/').next().unwrap_or_default().to_owned();
            self.clusters
                .get_or_create(&StateLabels {
                    state: c.state.into(),
                })
                .inc();
            let connected = c.connected.as_ref().is_some_and(|c| c.status == "True");
            self.connected
                .get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(i64::from(connected));
            let (count, ready) = c.nodes;
            for (label, n) in [("true", ready), ("false", count.saturating_sub(ready))] {
                self.nodes
                    .get_or_create(&NodeLabels {
                        cluster: cluster.clone(),
                        ready: label.into(),
                    })
                    .set(i64::from(n));
            }
            for (family, values) in [
                (&self.capacity, &c.capacity),
                (&self.allocatable, &c.allocatable),
            ] {
                for resource in FLEET_RESOURCES {
                    if let Some(q) = values
                        .get(resource)
                        .and_then(|q| drover_core::quantity::parse(q))
                    {
                        family
                            .get_or_create(&ResourceLabels {
                                cluster: cluster.clone(),
                                resource: resource.into(),
                            })
                            .set(q as f64 / 1000.0);
                    }
                }
            }
        }
        for severity in crate::kinds::alerts::SEVERITIES {
            let _ = self.firing.get_or_create(&SeverityLabels {
                severity: severity.into(),
            });
        }
        for rule in fleet.rules.all() {
            if rule.status.as_ref().and_then(|s| s.state.as_deref()) == Some("firing") {
                let severity = rule
                    .spec
                    .severity
                    .clone()
                    .unwrap_or_else(|| "warning".into());
                self.firing
                    .get_or_create(&SeverityLabels { severity })
                    .inc();
            }
        }
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The server's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    certificates: Family<CertificateLabels, Gauge>,
    /// The certificates' labels set last, to drop those gone since.
    certificate_labels: std::sync::Mutex<Vec<CertificateLabels>>,
    fleet: FleetGauges,
    /// One scrape fills the fleet gauges at a time.
    rendering: std::sync::Mutex<()>,
}

impl Metrics {
    pub(crate) fn new(deliveries: &crate::notify::Counters) -> Self {
        let mut registry = Registry::with_prefix("drover");
        deliveries.register(&mut registry);
        let fleet = FleetGauges::default();
        fleet.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to produce the response head",
            latency.clone(),
        );
        let certificates = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until a certificate the server uses expires (negative: expired)",
            certificates.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            certificates,
            certificate_labels: Default::default(),
            fleet,
            rendering: Default::default(),
        }
    }

    /// The registry in Prometheus text format, with the certificates'
    /// expiry and the fleet as of now.
    pub(crate) fn render(
        &self,
        certificates: &[crate::tls::CertificateStatus],
        fleet: &crate::controller::alerts::view::Fleet,
    ) -> String {
        let _one = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.fleet.fill(fleet);
        let now = drover_net::pki::now().unix_timestamp();
        let labels: Vec<CertificateLabels> = certificates
            .iter()
            .map(|c| CertificateLabels {
                certificate: c.name.to_owned(),
                subject: c.subject.clone(),
            })
            .collect();
        for (l, c) in labels.iter().zip(certificates) {
            self.certificates.get_or_create(l).set(c.not_after - now);
        }
        let mut previous = self
            .certificate_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for gone in previous.iter().filter(|l| !labels.contains(l)) {
            self.certificates.remove(gone);
        }
        *previous = labels;
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Middleware: count and time every request.
pub(crate) async fn track(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        code: response.status().as_u16(),
    };
    let elapsed = start.elapsed();
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    tracing::debug!(method = %labels.method, route = %labels.route, code = labels.code, ms = elapsed.as_secs_f64() * 1e3, "request");
    response
}

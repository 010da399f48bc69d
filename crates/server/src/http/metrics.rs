//! Prometheus metrics: request counts and latency histograms by method,
//! route template (never the raw path, so cardinality stays bounded) and
//! status code, and the expiry of the server's certificates, served as
//! text at `/metrics`.

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
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("drover");
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
        }
    }

    /// The registry in Prometheus text format, with the certificates'
    /// expiry as of now.
    pub(crate) fn render(&self, certificates: &[crate::tls::CertificateStatus]) -> String {
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

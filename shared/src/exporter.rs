//! Serving the metrics: the process's Prometheus recorder and an HTTP endpoint, `/metrics`,
//! that renders it in the Prometheus text format.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), so a process
//! that embeds a manager and a worker serves one set of metrics for both. It is installed the
//! first time an endpoint starts; before that, recording costs next to nothing.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metric;
use crate::service::ServiceError;

/// Gauges not set for this long leave the scrape (an engine that went away).
const GAUGE_IDLE: Duration = Duration::from_secs(60);
/// How often histograms are drained into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a process serves `/metrics`: `off`, an address such as `127.0.0.1:9464`, or `0` for
/// a free port on the loopback interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// No endpoint.
    Off,
    /// Listen here (port 0: any free port).
    On(SocketAddr),
}

impl MetricsAddr {
    /// The address to listen on, if any.
    pub fn listen(self) -> Option<SocketAddr> {
        match self {
            MetricsAddr::Off => None,
            MetricsAddr::On(addr) => Some(addr),
        }
    }
}

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" => Ok(MetricsAddr::Off),
            "0" => Ok(MetricsAddr::On(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))),
            other => other.parse().map(MetricsAddr::On).map_err(|_| {
                format!("metrics address {other:?} is not ip:port (e.g. 127.0.0.1:9464), `0` (any free port) or `off`")
            }),
        }
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsAddr::Off => f.write_str("off"),
            MetricsAddr::On(addr) => write!(f, "{addr}"),
        }
    }
}

/// The process's recorder, installed on first use.
fn recorder() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), metric::SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(metric::REQUEST_SHARDS.into()),
                metric::SHARD_COUNT_BUCKETS,
            )
        })
        .map(|b| b.idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE)))
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("installing the metrics recorder failed: {e}"))?;
    metric::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// A running `/metrics` endpoint; it stops when dropped.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Exporter {
    /// Install the recorder (once per process) and serve `/metrics` on `addr`, with the
    /// routes of `extra` beside it (the manager's `/api/scale`).
    ///
    /// # Errors
    /// [`ServiceError::Config`] when the address cannot be bound or another metrics recorder
    /// is installed in this process.
    pub async fn start(addr: SocketAddr, extra: Router) -> Result<Exporter, ServiceError> {
        let handle = recorder().map_err(ServiceError::Config)?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            ServiceError::Config(format!(
                "cannot serve metrics on {addr}: {e} (choose another --metrics-addr, `0` for any free port, or `off`)"
            ))
        })?;
        let addr = listener.local_addr().map_err(|e| {
            ServiceError::Config(format!("the metrics listener has no address: {e}"))
        })?;
        let stop = CancellationToken::new();
        tokio::spawn(upkeep(handle.clone(), stop.clone()));
        let app = Router::new()
            .route("/metrics", get(render))
            .with_state(handle)
            .merge(extra);
        let until = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await;
            if let Err(error) = served {
                warn!(%error, "the metrics endpoint stopped");
            }
        });
        info!(%addr, "serving metrics at http://{addr}/metrics");
        Ok(Exporter { addr, stop })
    }

    /// Where it listens (with the port chosen when it was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT_FORMAT)], handle.render())
}

async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The setting reads `off`, `0` and addresses, and refuses anything else with a message.
    #[test]
    fn parses_metrics_addresses() {
        assert_eq!("off".parse(), Ok(MetricsAddr::Off));
        assert_eq!(
            "0".parse::<MetricsAddr>().map(MetricsAddr::listen),
            Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        );
        let addr: MetricsAddr = "0.0.0.0:9464".parse().expect("an address");
        assert_eq!(addr.to_string(), "0.0.0.0:9464");
        let err = "localhost".parse::<MetricsAddr>().expect_err("no port");
        assert!(err.contains("ip:port"), "{err}");
    }

    /// An address already in use is a configuration error that names the address and the
    /// way out, not a panic or a silent run without metrics.
    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = taken.local_addr().expect("its address");
        match Exporter::start(addr, Router::new()).await {
            Err(ServiceError::Config(msg)) => {
                assert!(msg.contains(&addr.to_string()), "{msg}");
                assert!(msg.contains("--metrics-addr"), "{msg}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

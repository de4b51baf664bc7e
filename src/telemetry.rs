//! The Prometheus recorder behind `/metrics`: installed before the actor
//! tree starts (series the actors register at start-up would otherwise go
//! nowhere), with buckets for every histogram (without them the exporter
//! renders summaries), and its upkeep run on a timer (the exporter has no
//! task of its own without its HTTP listener).

use std::time::Duration;

use herald_actors::telemetry;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How often the recorder drains histogram buffers and idle series.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder; None (with a warning) if another recorder is
/// already installed, in which case `/metrics` is empty.
pub fn install() -> Option<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in telemetry::HISTOGRAMS {
        builder = match builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(metric = name, error = %e, "bad histogram buckets; /metrics is empty");
                return None;
            }
        };
    }
    match builder.install_recorder() {
        Ok(handle) => {
            telemetry::describe();
            metrics::gauge!(telemetry::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics is empty");
            None
        }
    }
}

/// Runs the recorder's upkeep until the runtime ends.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

//! The operator's Prometheus metrics: reconciles by kind and result, and their durations.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

struct Inner {
    registry: Registry,
    reconciles: Family<Outcome, Counter>,
    durations: Family<Kind, Histogram>,
}

/// Reconcile counters (`ferrocket_operator_reconciles_total{kind,result}`, result `ok` or
/// `error`) and durations (`ferrocket_operator_reconcile_duration_seconds{kind}`); cheap to
/// clone (shared).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("ferrocket_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        // 1 ms .. ~16 s: an apply pass is a few API calls; an unreachable broker costs seconds.
        let durations =
            Family::<Kind, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15)));
        registry.register("reconciles", "Reconciles by kind and result", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Reconcile durations by kind", durations.clone());
        Metrics(Arc::new(Inner { registry, reconciles, durations }))
    }
}

impl Metrics {
    /// Counts one reconcile of `kind` that took `took` and succeeded or not.
    pub fn observe(&self, kind: &str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.0.reconciles.get_or_create(&Outcome { kind: kind.into(), result: result.into() }).inc();
        self.0.durations.get_or_create(&Kind { kind: kind.into() }).observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.0.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_reconciles_by_kind_and_result() {
        let m = Metrics::default();
        m.observe("Topic", true, Duration::from_millis(3));
        m.observe("Topic", false, Duration::from_millis(3));
        m.observe("Topic", true, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains(r#"ferrocket_operator_reconciles_total{kind="Topic",result="ok"} 2"#), "{text}");
        assert!(text.contains(r#"ferrocket_operator_reconciles_total{kind="Topic",result="error"} 1"#), "{text}");
        assert!(text.contains(r#"ferrocket_operator_reconcile_duration_seconds_count{kind="Topic"} 3"#), "{text}");
    }
}

//! Status conditions (`Ready`, `Reconciling`, `Degraded`) the Kubernetes way
//! (`metav1.Condition`, KEP-1623): one per type, `lastTransitionTime` moves only when the status
//! changes, every condition carries the generation it describes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: the resource is fully applied and serving.
pub const READY: &str = "Ready";
/// Condition type: the operator is still bringing the cluster to the spec.
pub const RECONCILING: &str = "Reconciling";
/// Condition type: something is wrong that the operator cannot fix alone.
pub const DEGRADED: &str = "Degraded";

/// The message of `Degraded=False`. Messages are never empty: Kubernetes 1.20's server-side
/// apply turns an empty string into null, which the status schema refuses.
pub const NOTHING_WRONG: &str = "nothing is wrong";

/// A condition of `type_` with `status` (true/false), a CamelCase `reason` and a message, for
/// `generation`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// `current` with `new` conditions merged in: replaced by type, keeping the old transition time
/// when the status did not change; sorted by type.
pub fn merge(current: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = current.iter().filter(|c| !new.iter().any(|n| n.type_ == c.type_)).cloned().collect();
    for mut n in new {
        if let Some(old) = current.iter().find(|c| c.type_ == n.type_ && c.status == n.status) {
            n.last_transition_time = old.last_transition_time.clone();
        }
        out.push(n);
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut first = condition(READY, false, "Reconciling", "starting", Some(1));
        first.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let merged = merge(&[first.clone()], vec![condition(READY, false, "PodsNotReady", "1 of 2", Some(2))]);
        assert_eq!(merged[0].last_transition_time, first.last_transition_time);
        assert_eq!((merged[0].reason.as_str(), merged[0].observed_generation), ("PodsNotReady", Some(2)));
        let merged = merge(&merged, vec![condition(READY, true, "Ready", "ok", Some(2))]);
        assert_ne!(merged[0].last_transition_time, first.last_transition_time);
        let merged = merge(&merged, vec![condition(DEGRADED, false, "AsExpected", NOTHING_WRONG, Some(2))]);
        assert_eq!(merged.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), [DEGRADED, READY]);
    }
}

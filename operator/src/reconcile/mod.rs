//! The reconcilers: each takes one resource and brings the cluster to its spec, reporting in its
//! status (`observedGeneration`, [`conditions`]) and, for every failure, an Event.

pub mod brokerset;
pub mod conditions;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

/// Annotation: `"true"` stops reconciling the resource (nothing is changed until it is removed).
pub const PAUSE: &str = "ferrocket.io/pause-reconciliation";
/// Annotation: `"false"` hands the resource back to the user (the operator ignores it).
pub const MANAGED: &str = "ferrocket.io/managed";
/// Annotation: `"true"` allows removing broker groups (and what they hold) on scale-down.
pub const ALLOW_SCALE_DOWN: &str = "ferrocket.io/allow-scale-down";

/// What reconcilers share: the API client and the Event recorder.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    recorder: Recorder,
}

impl Context {
    /// A context over `client`; Events are reported as the `ferrocket-operator` controller.
    pub fn new(client: Client) -> Context {
        let reporter = Reporter { controller: crate::render::FIELD_MANAGER.into(), instance: None };
        Context { recorder: Recorder::new(client.clone(), reporter), client }
    }

    /// Publishes a Warning Event about `obj` (logged if the Event itself cannot be written).
    pub async fn warn<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: &str) {
        tracing::warn!(reason, note, "reconcile problem");
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::error!(reason, error = %e, "cannot publish the event");
        }
    }
}

/// Why a reconcile failed (the controller retries it with exponential backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The resource cannot be rendered.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// An object could not be serialized.
    #[error("serializing: {0}")]
    Serialize(serde_json::Error),
}

/// True if the resource is paused or not managed: the reconciler changes nothing.
pub fn skipped<K: Resource>(obj: &K) -> bool {
    let a = obj.annotations();
    a.get(PAUSE).is_some_and(|v| v == "true") || a.get(MANAGED).is_some_and(|v| v == "false")
}

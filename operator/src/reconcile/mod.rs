//! The reconcilers: each takes one resource and brings the cluster to its spec, reporting in its
//! status (`observedGeneration`, [`conditions`]) and, for every failure, an Event.

pub mod brokerset;
pub mod conditions;
pub mod consumergroup;
pub mod rolling;
pub mod targets;
pub mod topic;
pub mod user;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Annotation: `"true"` stops reconciling the resource (nothing is changed until it is removed).
pub const PAUSE: &str = "ferrocket.io/pause-reconciliation";
/// Annotation: `"false"` hands the resource back to the user (the operator ignores it).
pub const MANAGED: &str = "ferrocket.io/managed";
/// Annotation: `"true"` allows removing broker groups (and what they hold) on scale-down.
pub const ALLOW_SCALE_DOWN: &str = "ferrocket.io/allow-scale-down";

/// What reconcilers share: the API client, the way to the brokers, the Event recorder and the
/// metrics. No other state: one operator serves many BrokerSets in many namespaces.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// How BrokerSets' nameservers and masters are found.
    pub brokers: crate::admin::Brokers,
    /// Reconcile counters and durations.
    pub metrics: crate::metrics::Metrics,
    /// Consecutive failed reconciles per object (`Kind/namespace/name`), for the retry backoff.
    pub failures: Arc<Mutex<HashMap<String, u32>>>,
    recorder: Recorder,
}

impl Context {
    /// A context over `client`; Events are reported as the `ferrocket-operator` controller.
    pub fn new(client: Client) -> Context {
        Context::with_brokers(client, crate::admin::Brokers::default())
    }

    /// A context reaching brokers as `brokers` says.
    pub fn with_brokers(client: Client, brokers: crate::admin::Brokers) -> Context {
        let reporter = Reporter { controller: crate::render::FIELD_MANAGER.into(), instance: None };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            brokers,
            metrics: Default::default(),
            failures: Default::default(),
        }
    }

    /// Publishes a Warning Event about `obj` (logged if the Event itself cannot be written).
    pub async fn warn<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: &str) {
        tracing::warn!(reason, note, "reconcile problem");
        self.publish(obj, EventType::Warning, reason, note).await
    }

    /// Publishes an Event of `type_` about `obj` (logged if the Event itself cannot be written).
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
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
    /// Brokers could not be reached or refused an Admin call.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// Adding or removing the finalizer, or the cleanup it guards, failed.
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    /// An object could not be serialized.
    #[error("serializing: {0}")]
    Serialize(serde_json::Error),
}

impl Error {
    /// The Event reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "ApiError",
            Error::Render(_) => "InvalidSpec",
            Error::Admin(crate::admin::AdminError::Refused { .. }) => "Refused",
            Error::Admin(crate::admin::AdminError::Credentials(_)) => "CredentialsUnavailable",
            Error::Admin(_) => "BrokersUnavailable",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.reason()
                }
                _ => "FinalizerFailed",
            },
            Error::Serialize(_) => "InternalError",
        }
    }
}

/// True if the resource is paused or not managed: the reconciler changes nothing.
pub fn skipped<K: Resource>(obj: &K) -> bool {
    let a = obj.annotations();
    a.get(PAUSE).is_some_and(|v| v == "true") || a.get(MANAGED).is_some_and(|v| v == "false")
}

/// Server-side applies `status` (a JSON object of the kind's status fields) to `obj`'s status
/// subresource.
pub async fn patch_status<K>(ctx: &Context, obj: &K, status: serde_json::Value) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Serialize,
    K: std::fmt::Debug,
{
    let api: kube::Api<K> = kube::Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(crate::render::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

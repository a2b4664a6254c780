//! The custom resources of API group `ferrocket.io`, version `v1alpha1`: [`BrokerSet`],
//! [`Topic`], [`ConsumerGroup`] and [`User`]. Their OpenAPI schemas (with bounds, enums, patterns and CEL
//! rules) are generated from these types by `crdgen` into `crds/`.

// kube's `printcolumn(...)` is meant to repeat; clippy takes the repeated `type_ = ...` for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

mod brokerset;
mod consumergroup;
mod topic;
mod user;

pub use brokerset::*;
pub use consumergroup::*;
pub use topic::*;
pub use user::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Ferrocket resource.
pub const GROUP: &str = "ferrocket.io";

/// What happens on the brokers when a Topic or ConsumerGroup resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave it on the brokers (the default: deleting a resource never deletes messages).
    #[default]
    Retain,
    /// Delete it from every broker group it was applied to.
    Delete,
}

/// Every CRD, in the order `crdgen` writes them.
pub fn all() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![BrokerSet::crd(), Topic::crd(), ConsumerGroup::crd(), User::crd()]
}

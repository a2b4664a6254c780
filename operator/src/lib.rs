//! The Ferrocket operator: its custom resources ([`crd`]), the CRD files generated from them
//! ([`crdgen`]), and the Kubernetes objects a BrokerSet runs as ([`render`]).
#![warn(missing_docs)]

pub mod admin;
pub mod crd;
pub mod crdgen;
pub mod credentials;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod run;

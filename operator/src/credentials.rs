//! The cluster's own credentials and TLS trust, as the operator uses them: the Secret that
//! `spec.auth` names (generated as `<name>-auth` when none is named) signs the operator's Admin
//! calls, and the `ca.crt` of `spec.tls`'s Secret is what it trusts when it dials the brokers.

use std::collections::BTreeMap;

use ferrocket_proto::dial::Dialer;
use ferrocket_proto::signing::Signer;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

use crate::admin::AdminError;
use crate::crd::{BrokerSet, ACCESS_KEY, SECRET_KEY};

/// The access key of a generated credentials Secret.
pub const GENERATED_ACCESS_KEY: &str = "ferrocket-cluster";

/// The value of `key` in `secret`, as UTF-8. Errors: missing or not UTF-8, naming both.
fn value(secret: &Secret, key: &str) -> Result<String, AdminError> {
    let bytes = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone());
    let bytes =
        bytes.ok_or_else(|| AdminError::Credentials(format!("Secret {} has no key {key}", secret.name_any())))?;
    String::from_utf8(bytes)
        .map_err(|_| AdminError::Credentials(format!("Secret {} key {key} is not UTF-8", secret.name_any())))
}

async fn get(client: &Client, ns: &str, name: &str) -> Result<Secret, AdminError> {
    match Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(AdminError::Credentials(format!("Secret {ns}/{name} does not exist"))),
        Err(e) => Err(AdminError::Credentials(format!("cannot read Secret {ns}/{name}: {e}"))),
    }
}

/// How the operator dials and signs calls to `bs`'s processes: as the cluster's super user when
/// authentication is on, over TLS trusting the TLS Secret's `ca.crt` when `spec.tls` is set.
/// Errors: [`AdminError::Credentials`] when a Secret or one of its keys is missing.
pub async fn dialer(client: &Client, bs: &BrokerSet) -> Result<Dialer, AdminError> {
    let ns = bs.namespace().unwrap_or_default();
    let signer = match bs.spec.auth_secret(&bs.name_any()) {
        Some(name) => {
            let s = get(client, &ns, &name).await?;
            Signer::new(&value(&s, ACCESS_KEY)?, &value(&s, SECRET_KEY)?)
        }
        None => Signer::default(),
    };
    match &bs.spec.tls {
        Some(tls) => {
            let ca = value(&get(client, &ns, &tls.secret_name).await?, "ca.crt")?;
            Ok(Dialer::tls(signer, ca.as_bytes(), tls.server_name.as_deref()))
        }
        None => Ok(Dialer::plain(signer)),
    }
}

/// Creates `<name>-auth` with a random secret key (256 bits, hex) if authentication is on, no
/// `auth.secretName` is given and it does not exist yet; it is owned by `bs` (deleted with it)
/// and never changed once made. Returns true when it made one. Errors: API calls.
pub async fn ensure_generated(client: &Client, bs: &BrokerSet) -> Result<bool, kube::Error> {
    if !bs.spec.auth.enabled || bs.spec.auth.secret_name.is_some() {
        return Ok(false);
    }
    let ns = bs.namespace().unwrap_or_default();
    let name = format!("{}-auth", bs.name_any());
    let api = Api::<Secret>::namespaced(client.clone(), &ns);
    if api.get_opt(&name).await?.is_some() {
        return Ok(false);
    }
    let mut secret_key = [0u8; 32];
    getrandom::fill(&mut secret_key).expect("the OS random source");
    let hex: String = secret_key.iter().map(|b| format!("{b:02x}")).collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            labels: Some(crate::render::labels(&bs.name_any(), "auth", None)),
            owner_references: bs.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (ACCESS_KEY.to_string(), ByteString(GENERATED_ACCESS_KEY.as_bytes().to_vec())),
            (SECRET_KEY.to_string(), ByteString(hex.into_bytes())),
        ])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        // Made meanwhile (another reconcile): theirs stands.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

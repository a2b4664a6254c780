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

/// Creates the credentials Secret (`<name>-auth`, [`crate::crd::BrokerSetSpec::auth_secret`])
/// with a random secret key if authentication is on, no `auth.secretName` is given and it does
/// not exist yet; it is owned by `bs` (deleted with it) and never changed once made. Returns the
/// name of the Secret it made, if it made one. Errors: API calls.
pub async fn ensure_generated(client: &Client, bs: &BrokerSet) -> Result<Option<String>, kube::Error> {
    let Some(name) = bs.spec.auth_secret(&bs.name_any()).filter(|_| bs.spec.auth.secret_name.is_none()) else {
        return Ok(None);
    };
    let ns = bs.namespace().unwrap_or_default();
    let owner = bs.controller_owner_ref(&());
    let labels = crate::render::labels(&bs.name_any(), "auth", None);
    let made = create_if_absent(client, &ns, &name, GENERATED_ACCESS_KEY, owner, labels).await?;
    Ok(made.map(|_| name))
}

/// The secret key of `user` from its Secret, which is made (keys `accessKey` and a random
/// `secretKey`, owned by `user`) if it does not exist. Errors: [`AdminError::Credentials`] when
/// the Secret cannot be read or made, or has no UTF-8 `secretKey`.
pub async fn user_secret_key(client: &Client, user: &crate::crd::User) -> Result<String, AdminError> {
    let (ns, name) = (user.namespace().unwrap_or_default(), user.secret_name());
    let labels = crate::render::labels(&user.spec.broker_set, "user", None);
    let made = create_if_absent(client, &ns, &name, &user.user_name(), user.controller_owner_ref(&()), labels)
        .await
        .map_err(|e| AdminError::Credentials(format!("cannot make Secret {ns}/{name}: {e}")))?;
    match made {
        Some(s) => value(&s, SECRET_KEY),
        None => value(&get(client, &ns, &name).await?, SECRET_KEY),
    }
}

/// Creates Secret `ns/name` with `access_key` and a random secret key (256 bits, hex) unless it
/// exists: the Secret made, or None. Errors: API calls.
async fn create_if_absent(
    client: &Client,
    ns: &str,
    name: &str,
    access_key: &str,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    labels: BTreeMap<String, String>,
) -> Result<Option<Secret>, kube::Error> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    if api.get_opt(name).await?.is_some() {
        return Ok(None);
    }
    let mut secret_key = [0u8; 32];
    getrandom::fill(&mut secret_key).expect("the OS random source");
    let hex: String = secret_key.iter().map(|b| format!("{b:02x}")).collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (ACCESS_KEY.to_string(), ByteString(access_key.as_bytes().to_vec())),
            (SECRET_KEY.to_string(), ByteString(hex.into_bytes())),
        ])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(s) => Ok(Some(s)),
        // Made meanwhile (another reconcile): theirs stands.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

//! What every pod of a BrokerSet gets for authentication and TLS: the cluster's credentials as
//! env from their Secret (never in a ConfigMap), and the TLS Secret mounted read-only with the
//! config keys that point at it. Nameservers, the controller and brokers alike: each verifies
//! signatures, and each dials the others as the cluster's own super user, over TLS when set.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount};

use super::pod::env;
use super::Ctx;
use crate::crd::{TlsMode, ACCESS_KEY, SECRET_KEY};

/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/ferrocket-tls";

/// A pod's security wiring.
pub struct Security {
    /// Env of the container (config keys as `FERROCKET_<KEY>`).
    pub env: Vec<EnvVar>,
    /// The TLS Secret's mount, if any.
    pub mounts: Vec<VolumeMount>,
    /// The TLS Secret's volume, if any.
    pub volumes: Vec<Volume>,
    /// What changes when this does, for the pod template's config hash.
    pub hash_text: String,
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(false) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The security wiring of every pod of `ctx`'s BrokerSet.
pub(super) fn render(ctx: &Ctx) -> Security {
    let spec = &ctx.bs.spec;
    let mut env_vars = Vec::new();
    let mut plain = Vec::new();
    if let Some(secret) = spec.auth_secret(&ctx.name) {
        plain.push(("FERROCKET_AUTH_ENABLED", "true".to_string()));
        env_vars.push(secret_env("FERROCKET_AUTH_ACCESS_KEY", &secret, ACCESS_KEY));
        env_vars.push(secret_env("FERROCKET_AUTH_SECRET_KEY", &secret, SECRET_KEY));
    }
    let (mut mounts, mut volumes) = (Vec::new(), Vec::new());
    if let Some(tls) = &spec.tls {
        let mode = if tls.mode == TlsMode::Enforcing { "enforcing" } else { "permissive" };
        plain.push(("FERROCKET_TLS_MODE", mode.to_string()));
        plain.push(("FERROCKET_TLS_CERT_FILE", format!("{TLS_DIR}/tls.crt")));
        plain.push(("FERROCKET_TLS_KEY_FILE", format!("{TLS_DIR}/tls.key")));
        plain.push(("FERROCKET_TLS_CA_FILE", format!("{TLS_DIR}/ca.crt")));
        if let Some(name) = &tls.server_name {
            plain.push(("FERROCKET_TLS_SERVER_NAME", name.clone()));
        }
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "tls".into(),
            // Group-readable: the pod's fsGroup owns Secret volume files.
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let hash_text = format!(
        "{}auth_secret={:?}\ntls_secret={:?}\n",
        plain.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>(),
        spec.auth_secret(&ctx.name),
        spec.tls.as_ref().map(|t| &t.secret_name)
    );
    env_vars.extend(plain.iter().map(|(k, v)| env(k, v)));
    Security { env: env_vars, mounts, volumes, hash_text }
}

//! The limiter's admin API, for what a run asks of it besides load: forgetting its keys'
//! state before a run (`--reset`, the TUI's reset key). This is Sluice's admin listener
//! (`POST /v1/keys/reset` with a bearer token); a run against another limiter leaves reset off.

use anyhow::Context as _;

use crate::{
    client::{http::exchange, http1, socket::Dialer},
    keys::KeySpace,
};

/// The environment variable holding the admin token. Never a flag: the command line is
/// written into every report.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// Where the admin API listens, and the token to use there.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminAccess {
    /// `host:port` of each node's admin listener (one suffices on a shared Redis; memory
    /// nodes each hold their own state).
    pub addrs: Vec<String>,
    pub token: String,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl AdminAccess {
    /// `addrs` with the token from [`TOKEN_ENV`]; `None` without addresses.
    pub fn from_env(addrs: Vec<String>) -> anyhow::Result<Option<AdminAccess>> {
        if addrs.is_empty() {
            return Ok(None);
        }
        let token = std::env::var(TOKEN_ENV).with_context(|| {
            format!("--admin-addr needs an admin token: set {TOKEN_ENV} (an admin-role token of the service's admin.tokens_file)")
        })?;
        Ok(Some(AdminAccess { addrs, token }))
    }
}

/// A fresh token for a service this process starts (the demo, `loadgen stack`): 128 bits
/// from the OS-seeded keys of std's `RandomState`, so nothing else need be built in.
pub fn random_token() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let half = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(std::process::id().into());
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// Resets every key of `keys` on `resource` at every admin address.
pub async fn reset_keys(
    access: &AdminAccess,
    keys: &KeySpace,
    resource: &str,
) -> anyhow::Result<()> {
    for addr in &access.addrs {
        let (dialer, mut connection) = (Dialer::plain(addr), None);
        for key in keys.names() {
            reset(&mut connection, &dialer, &access.token, key, resource)
                .await
                .with_context(|| format!("reset of {key} on the admin API at {addr}"))?;
        }
    }
    Ok(())
}

async fn reset(
    slot: &mut Option<http1::Connection>,
    dialer: &Dialer,
    token: &str,
    key: &str,
    resource: &str,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({ "key": key, "resource": resource }))?;
    let head = format!(
        "POST /v1/keys/reset HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        dialer.authority(),
        body.len()
    );
    let (status, answer) = exchange(slot, dialer, &[head.as_bytes(), &body])
        .await
        .map_err(|kind| anyhow::anyhow!("{}", kind.label()))?;
    anyhow::ensure!(
        status == 200,
        "answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

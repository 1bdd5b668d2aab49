//! The `[admin]` section: where the admin API listens and the tokens it accepts.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Issues, ServerConfig};
use crate::auth::Tokens;

/// The admin API, when configured: its own listener, never the public ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    pub tokens: Tokens,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) addr: Option<String>,
    /// Read when the configuration loads (relative paths from the working directory).
    pub(super) tokens_file: Option<String>,
    /// The `SLUICE_ADMIN_TOKENS` text; replaces the file when set. Never in the TOML file.
    #[serde(skip)]
    pub(super) tokens_env: Option<String>,
}

impl RawAdmin {
    pub(super) fn validate(
        self,
        server: &ServerConfig,
        issues: &mut Issues,
    ) -> Option<AdminConfig> {
        let text = self.addr?;
        let addr = match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                issues.add(
                    "admin.addr",
                    format!(
                        "`{text}` is not a socket address; write ip:port, e.g. \"127.0.0.1:9090\""
                    ),
                );
                return None;
            }
        };
        if addr.port() != 0 && (addr == server.grpc_addr || addr == server.http_addr) {
            issues.add(
                "admin.addr",
                format!("{addr} is also a public listener; the admin API needs a port of its own"),
            );
        }
        let (origin, tokens) = match (self.tokens_env, self.tokens_file) {
            (Some(text), _) => ("SLUICE_ADMIN_TOKENS", text),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => ("admin.tokens_file", text),
                Err(err) => {
                    issues.add(
                        "admin.tokens_file",
                        format!("cannot read `{path}` ({err}); give the path of a file of `name:role:token` lines"),
                    );
                    return None;
                }
            },
            (None, None) => {
                issues.add(
                    "admin.tokens_file",
                    "admin.addr is set but no token is: set admin.tokens_file or SLUICE_ADMIN_TOKENS (`name:role:token` entries)",
                );
                return None;
            }
        };
        match Tokens::parse(&tokens) {
            Ok(tokens) => Some(AdminConfig { addr, tokens }),
            Err(problems) => {
                for problem in problems {
                    issues.add(origin, problem);
                }
                None
            }
        }
    }
}

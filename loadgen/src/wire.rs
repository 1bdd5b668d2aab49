//! What the clients and the statistics share: where load goes (`Endpoint`, `Protocol`), what
//! each request calls (`Call`), what came back (`Answer`, with a stacked rule's `LimitBounds`),
//! and why a request failed (`ErrorKind`). It depends on no client; every client and `stats`
//! depend on it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Where load goes: `grpc://host:port` (Sluice's gRPC API), `http://host:port` (its HTTP API)
/// or `rls://host:port` (any server of Envoy's rate limit service), or over TLS `grpcs://`,
/// `https://` and `rlss://`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub url: String,
    pub protocol: Protocol,
    /// Over TLS (`grpcs://`, `https://`).
    pub tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
    /// Envoy's rate limit service (gRPC).
    Rls,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
        let (protocol, tls) = match scheme {
            "grpc" => (Protocol::Grpc, false),
            "grpcs" => (Protocol::Grpc, true),
            "http" => (Protocol::Http, false),
            "https" => (Protocol::Http, true),
            "rls" => (Protocol::Rls, false),
            "rlss" => (Protocol::Rls, true),
            _ => {
                return Err(format!(
                    "target `{text}` needs a scheme: grpc://HOST:PORT for the gRPC API, http://HOST:PORT for HTTP, rls://HOST:PORT for Envoy's rate limit service (grpcs://, https://, rlss:// over TLS)"
                ));
            }
        };
        let authority = rest.trim_end_matches('/');
        authority
            .parse::<hyper::http::uri::Authority>()
            .ok()
            .filter(|authority| authority.port().is_some())
            .ok_or_else(|| format!("target `{text}`: `{authority}` is not HOST:PORT"))?;
        Ok(Endpoint {
            url: format!("{scheme}://{authority}"),
            protocol,
            tls,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    /// `HOST:PORT`.
    pub fn authority(&self) -> &str {
        self.url.split_once("://").map_or("", |(_, rest)| rest)
    }

    /// The host without its port (and an IPv6 address without its brackets): the name a TLS
    /// certificate must carry.
    pub fn host(&self) -> &str {
        let authority = self.authority();
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

pub use transport::ErrorKind;

/// The algorithms the service reports, for the ledger's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    TokenBucket,
    Gcra,
    FixedWindow,
    SlidingWindowCounter,
    SlidingWindowLog,
}

impl AlgorithmKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "token_bucket" => AlgorithmKind::TokenBucket,
            "gcra" => AlgorithmKind::Gcra,
            "fixed_window" => AlgorithmKind::FixedWindow,
            "sliding_window_counter" => AlgorithmKind::SlidingWindowCounter,
            "sliding_window_log" => AlgorithmKind::SlidingWindowLog,
            _ => return None,
        })
    }
}

/// One limit's parameters, as the ledger bounds what a key can be admitted under it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitBound {
    pub algorithm: AlgorithmKind,
    pub limit: u64,
    pub window_us: u64,
}

impl LimitBound {
    pub const fn new(algorithm: AlgorithmKind, limit: u64, window_us: u64) -> Self {
        Self {
            algorithm,
            limit,
            window_us,
        }
    }
}

/// The limits of a stacked rule, as an answer listed them: kept only for rules of 2 to
/// [`LimitBounds::CAPACITY`] limits (a one-limit rule's are the answer's own fields; a larger
/// stack is left to the deciding limit's bound), in a fixed array so reading them allocates
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitBounds {
    len: usize,
    items: [Option<LimitBound>; LimitBounds::CAPACITY],
}

impl LimitBounds {
    pub const CAPACITY: usize = 4;

    /// A list as an answer would carry it (tests).
    #[cfg(test)]
    pub(crate) fn from_list(limits: &[LimitBound]) -> Self {
        let mut bounds = Self::default();
        for limit in limits {
            bounds.push(Some(*limit));
        }
        bounds
    }

    /// Adds a listed limit; `None` (an algorithm the ledger cannot bound) spoils the list.
    pub(crate) fn push(&mut self, bound: Option<LimitBound>) {
        match bound {
            Some(bound) if self.len < Self::CAPACITY => {
                self.items[self.len] = Some(bound);
                self.len += 1;
            }
            _ => self.len = Self::CAPACITY + 1,
        }
    }

    /// The listed limits, when the answer listed a complete stack of at least two.
    pub fn stacked(&self) -> Option<impl Iterator<Item = LimitBound> + '_> {
        (2..=Self::CAPACITY)
            .contains(&self.len)
            .then(|| self.items[..self.len].iter().flatten().copied())
    }
}

/// A decision as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    pub banned: bool,
    /// Let through by a rule in shadow mode that would have denied it.
    pub shadow_denied: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_us: u64,
    pub retry_after_us: u64,
    pub policy_window_us: u64,
    pub algorithm: Option<AlgorithmKind>,
    /// The service answered by a failure mode (its store was down).
    pub failed_over: bool,
    /// Every limit of a stacked rule, when the answer listed them.
    pub limits: LimitBounds,
}

impl Answer {
    /// A health probe's answer: allowed when the service said it is serving.
    pub fn health(serving: bool) -> Self {
        Self {
            allowed: serving,
            banned: false,
            shadow_denied: false,
            limit: 0,
            remaining: 0,
            reset_after_us: 0,
            retry_after_us: 0,
            policy_window_us: 0,
            algorithm: None,
            failed_over: false,
            limits: LimitBounds::default(),
        }
    }
}

/// What each request calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Call {
    /// The rate-limit check (gRPC Check, HTTP POST /check).
    #[default]
    Check,
    /// The health probe (gRPC grpc.health.v1.Health/Check, HTTP GET /healthz): the cheapest
    /// call, for measuring the generator's own ceiling.
    Health,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_a_known_scheme() {
        let grpc: Endpoint = "grpc://127.0.0.1:50051".parse().unwrap();
        assert_eq!(
            (grpc.protocol, grpc.authority()),
            (Protocol::Grpc, "127.0.0.1:50051")
        );
        let http: Endpoint = "http://localhost:8080/".parse().unwrap();
        assert_eq!(
            (http.protocol, http.url.as_str(), http.tls),
            (Protocol::Http, "http://localhost:8080", false)
        );
        let grpcs: Endpoint = "grpcs://sluice.example:443".parse().unwrap();
        assert_eq!(
            (grpcs.protocol, grpcs.tls, grpcs.host()),
            (Protocol::Grpc, true, "sluice.example")
        );
        let https: Endpoint = "https://[::1]:8443".parse().unwrap();
        assert_eq!(
            (https.protocol, https.tls, https.host()),
            (Protocol::Http, true, "::1")
        );
        let rls: Endpoint = "rls://127.0.0.1:8081".parse().unwrap();
        assert_eq!((rls.protocol, rls.tls), (Protocol::Rls, false));
        assert!(
            "127.0.0.1:1"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("needs a scheme")
        );
        assert!(
            "grpc://localhost"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("not HOST:PORT")
        );
        assert!(
            "http://not a host"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("not HOST:PORT")
        );
    }
}

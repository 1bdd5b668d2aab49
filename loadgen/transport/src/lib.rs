//! The load generator's own protocol clients: HTTP/1.1 (`http1`), HTTP/2 for unary gRPC
//! (`http2`, with its HPACK codec `hpack`), over plain TCP or TLS (`socket`). Built for the
//! generator's hot loop: requests prepared before the run, nothing allocated per request, and
//! no task per request. `http2`'s and `http1`'s module docs give the measurements that keep
//! them over h2 and hyper (results/benchmarks/clients.md); tests/ holds their behaviour
//! against two HTTP/2 server implementations and the fuzzing of their decoders.

pub mod hpack;
pub mod http1;
pub mod http2;
pub mod socket;

use serde::{Deserialize, Serialize};

/// Why a request failed. Errors never count as allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    Unavailable,
    Refused,
    InvalidArgument,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
        ErrorKind::Refused,
        ErrorKind::InvalidArgument,
        ErrorKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Refused => "refused",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Other => "other",
        }
    }

    /// Worth retrying: the request may succeed later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Refused
        )
    }
}

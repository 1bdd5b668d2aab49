//! Who may use the admin API: bearer tokens, each with a name (for the audit log) and a role.
//!
//! Tokens come from a file (`admin.tokens_file`) or the `SLUICE_ADMIN_TOKENS` environment
//! variable, in one format: entries separated by newlines or commas, each `name:role:token`;
//! `#` starts a comment line. A presented token is compared with every configured token in
//! constant time (no early exit on the first differing byte, none on the first match), so the
//! answer's timing says nothing about how much of a guess was right.

use std::fmt;

use subtle::ConstantTimeEq as _;

/// Shortest token accepted: 16 characters of the token alphabet is ~96 bits when random.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a token may do. `Admin` may do everything `Read` and `Report` may; those two share
/// nothing (a dashboard's token cannot move a factor, a backend's cannot read rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read rules, explain keys, list top offenders.
    Read,
    /// Report the backend's latency and errors (adaptive limits), on the public APIs.
    Report,
    /// Change state: reset keys, lift bans, change rules; and all of the above.
    Admin,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Report => "report",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Role::Read),
            "report" => Some(Role::Report),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The caller a token identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// `Err` when this caller's role is below `needed`.
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if self.role == needed || self.role == Role::Admin {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                name: self.name.clone(),
                role: self.role,
                needed,
            })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the bearer token is not one this node knows")]
    Unknown,
    #[error("token `{name}` has role {role_label}; this needs role {needed_label}", role_label = role.label(), needed_label = needed.label())]
    Forbidden {
        name: String,
        role: Role,
        needed: Role,
    },
}

/// The configured tokens. `Debug` never prints a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    principal: Principal,
    secret: Vec<u8>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|entry| &entry.principal))
            .finish()
    }
}

impl Tokens {
    /// Parses `text` (see the module doc). Every problem is reported, each as a message naming
    /// the entry by its position and name, never by its secret.
    pub fn parse(text: &str) -> Result<Tokens, Vec<String>> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut problems = Vec::new();
        let lines = text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        for (index, line) in lines.enumerate() {
            let number = index + 1;
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                problems.push(format!(
                    "entry {number} is not `name:role:token`; write e.g. `ci:admin:<token>`"
                ));
                continue;
            };
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(format!(
                    "entry {number} has no name; names are printable ASCII without spaces and appear in the audit log"
                ));
            }
            let Some(role) = Role::parse(role.trim()) else {
                problems.push(format!(
                    "entry {number} (`{name}`): unknown role `{}`; use read, report or admin",
                    role.trim()
                ));
                continue;
            };
            let secret = secret.trim();
            if secret.chars().count() < MIN_TOKEN_CHARS || !secret.bytes().all(is_token_byte) {
                problems.push(format!(
                    "entry {number} (`{name}`): the token must be at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 - . _ ~ + / =; generate one with `openssl rand -hex 32`"
                ));
                continue;
            }
            if entries.iter().any(|entry| entry.principal.name == name) {
                problems.push(format!(
                    "entry {number}: the name `{name}` is used twice; give every token its own name"
                ));
            }
            if entries
                .iter()
                .any(|entry| entry.secret == secret.as_bytes())
            {
                problems.push(format!(
                    "entry {number} (`{name}`): the same token is listed twice; give every caller its own"
                ));
            }
            entries.push(Entry {
                principal: Principal {
                    name: name.to_owned(),
                    role,
                },
                secret: secret.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() && problems.is_empty() {
            problems.push("no tokens; add a line `name:role:token`".to_owned());
        }
        if problems.is_empty() {
            Ok(Tokens { entries })
        } else {
            Err(problems)
        }
    }

    /// The caller an `Authorization` header value identifies.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let presented = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Missing)?;
        let mut found = None;
        for entry in &self.entries {
            // Every entry is compared, matched or not.
            if bool::from(entry.secret.as_slice().ct_eq(presented)) {
                found = Some(&entry.principal);
            }
        }
        found.cloned().ok_or(AuthError::Unknown)
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 6750).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The credentials a request presents: its one `Authorization` header. Two are ambiguous,
/// so they count as none rather than either.
pub fn presented(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        _ => None,
    }
}

/// RFC 6750's token68 alphabet.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "0123456789abcdef0123";
    const READER: &str = "fedcba9876543210fedc";
    const REPORTER: &str = "a1b2c3d4e5f60718293a";

    fn tokens() -> Tokens {
        Tokens::parse(&format!(
            "# who:role:token\nops:admin:{ADMIN}\n\ngrafana:read:{READER}\nbackend:report:{REPORTER}"
        ))
        .unwrap()
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn a_known_token_names_its_caller_and_role() {
        let tokens = tokens();
        let ops = tokens.authenticate(Some(&bearer(ADMIN))).unwrap();
        assert_eq!((ops.name.as_str(), ops.role), ("ops", Role::Admin));
        let reader = tokens
            .authenticate(Some(format!("bearer  {READER} ").as_bytes()))
            .unwrap();
        assert_eq!((reader.name.as_str(), reader.role), ("grafana", Role::Read));
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused() {
        let tokens = tokens();
        assert_eq!(tokens.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            tokens.authenticate(Some(ADMIN.as_bytes())),
            Err(AuthError::Missing)
        );
        assert_eq!(
            tokens.authenticate(Some(b"Basic b3BzOnNlY3JldA==")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            tokens.authenticate(Some(b"Bearer ")),
            Err(AuthError::Missing)
        );
        // A prefix, an extension and a one-byte change of a real token are all unknown.
        for guess in [&ADMIN[..19], &format!("{ADMIN}0"), "1123456789abcdef0123"] {
            assert_eq!(
                tokens.authenticate(Some(&bearer(guess))),
                Err(AuthError::Unknown),
                "{guess}"
            );
        }
    }

    #[test]
    fn a_role_allows_what_it_covers_and_no_more() {
        let tokens = tokens();
        let reader = tokens.authenticate(Some(&bearer(READER))).unwrap();
        assert!(reader.require(Role::Read).is_ok());
        let refused = reader.require(Role::Admin).unwrap_err();
        assert!(
            refused.to_string().contains("needs role admin"),
            "{refused}"
        );
        assert!(reader.require(Role::Report).is_err());
        let backend = tokens.authenticate(Some(&bearer(REPORTER))).unwrap();
        assert!(backend.require(Role::Report).is_ok());
        assert!(backend.require(Role::Read).is_err() && backend.require(Role::Admin).is_err());
        let ops = tokens.authenticate(Some(&bearer(ADMIN))).unwrap();
        assert!(ops.require(Role::Admin).is_ok() && ops.require(Role::Read).is_ok());
        assert!(ops.require(Role::Report).is_ok());
    }

    #[test]
    fn bad_entries_are_all_named_without_their_secret() {
        let text = format!(
            "ops:admin:{ADMIN}\nnocolons\nx:root:{READER}\nshort:read:abc\nops:read:{READER}\ntwin:read:{ADMIN}"
        );
        let problems = Tokens::parse(&text).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("entry 2 is not `name:role:token`"));
        assert!(problems[1].contains("unknown role `root`"));
        assert!(problems[2].contains("at least 16 characters"));
        assert!(problems[3].contains("`ops` is used twice"));
        assert!(problems[4].contains("same token is listed twice"));
        for problem in &problems {
            assert!(
                !problem.contains(ADMIN) && !problem.contains(READER),
                "{problem}"
            );
        }
        assert!(Tokens::parse("# only a comment\n").is_err());
        assert!(!format!("{:?}", tokens()).contains(ADMIN));
    }

    #[test]
    fn an_environment_list_separates_entries_with_commas() {
        let tokens = Tokens::parse(&format!("ops:admin:{ADMIN},grafana:read:{READER}")).unwrap();
        assert_eq!(
            tokens.authenticate(Some(&bearer(READER))).unwrap().role,
            Role::Read
        );
    }
}

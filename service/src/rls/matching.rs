//! Which configured limit a request descriptor reaches, exactly as envoyproxy/ratelimit
//! matches (its `src/config/config_impl.go`, `GetLimit`): entry by entry down the domain's
//! tree, trying at each level the exact `key_value`, then the level's wildcards in
//! configuration order, then the bare `key`; a limit applies only when it sits at the
//! request's last entry. Pure: no I/O, no clock.

use super::{Domains, Leaf, Node};

/// A descriptor entry as matching reads it.
pub trait Entry {
    fn key(&self) -> &str;
    fn value(&self) -> &str;
}

impl Entry for (&str, &str) {
    fn key(&self) -> &str {
        self.0
    }
    fn value(&self) -> &str {
        self.1
    }
}

/// The limit a descriptor reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched<'a> {
    pub leaf: &'a Leaf,
    /// Entries matched by a `share_threshold` wildcard: (entry index, the pattern's value),
    /// which names their bucket in place of the request's value.
    pub shared: Vec<(usize, &'a str)>,
    /// How each entry appears in the limit's metric key (`value_to_metric`), as the
    /// reference writes it: entry `i`'s value when bit `i` is set (an exact value, or a node
    /// with `value_to_metric`); a wildcard's pattern value from `patterns`; else the key alone.
    pub valued: u64,
    pub patterns: Vec<(usize, &'a str)>,
}

impl Matched<'_> {
    /// The reference's `value_to_metric` key: the domain, then each entry's key with its value
    /// where [`Matched::valued`] or [`Matched::patterns`] say so.
    pub fn metric_key<E: Entry>(&self, domain: &str, entries: &[E]) -> String {
        descriptor_key(domain, entries, |index, entry| {
            if index < 64 && self.valued & (1 << index) != 0 {
                Some(entry.value())
            } else {
                self.patterns
                    .iter()
                    .find(|(at, _)| *at == index)
                    .map(|(_, pattern)| *pattern)
            }
        })
    }
}

/// A descriptor named as the reference names its stats: the domain, then each entry's key,
/// with `_` and the value `value_of` gives (if any, and not empty).
pub fn descriptor_key<'e, E: Entry>(
    domain: &str,
    entries: &'e [E],
    value_of: impl Fn(usize, &'e E) -> Option<&'e str>,
) -> String {
    let mut key = domain.to_owned();
    for (index, entry) in entries.iter().enumerate() {
        key.push('.');
        key.push_str(entry.key());
        if let Some(value) = value_of(index, entry).filter(|value| !value.is_empty()) {
            key.push('_');
            key.push_str(value);
        }
    }
    key
}

/// The limit `entries` reach in `domain`, if any. An unknown domain, an empty descriptor or
/// a path that leaves the tree (or stops above the last entry) reaches none.
pub fn find<'a, E: Entry>(
    domains: &'a Domains,
    domain: &str,
    entries: &[E],
) -> Option<Matched<'a>> {
    let mut level: &Node = domains.root(domain)?;
    let mut shared = Vec::new();
    let mut patterns = Vec::new();
    let mut valued = 0u64;
    let mut composite = String::new();
    let last = entries.len().checked_sub(1)?;
    for (index, entry) in entries.iter().enumerate() {
        composite.clear();
        composite.push_str(entry.key());
        composite.push('_');
        composite.push_str(entry.value());
        let bit = if index < 64 { 1u64 << index } else { 0 };
        let mut next = level.children.get(composite.as_str());
        if next.is_some() {
            valued |= bit;
        } else if let Some(wildcard) = level
            .wildcards
            .iter()
            .find(|wildcard| wildcard_match(&wildcard.parts, &composite))
        {
            next = level.children.get(&wildcard.composite);
            if let Some(node) = next {
                if let Some(value) = node.shared_value.as_deref() {
                    shared.push((index, value));
                }
                if node.value_to_metric && node.shared_value.is_none() {
                    valued |= bit;
                } else {
                    patterns.push((index, node.value_pattern.as_str()));
                }
            }
        }
        let next = match next {
            Some(next) => next,
            None => {
                let bare = level.children.get(entry.key())?;
                if bare.value_to_metric {
                    valued |= bit;
                }
                bare
            }
        };
        if index == last {
            return next.limit.as_ref().map(|leaf| Matched {
                leaf,
                shared,
                valued,
                patterns,
            });
        }
        if next.children.is_empty() {
            return None;
        }
        level = next;
    }
    None
}

/// Whether `value` matches a pattern split at each `*` (each `*` matches any run of
/// characters, possibly empty, and the literal parts must appear in order).
pub fn wildcard_match(parts: &[String], value: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|only| only == value);
    };
    let fixed: usize = parts.iter().map(String::len).sum();
    if value.len() < fixed || !value.starts_with(first.as_str()) || !value.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in middle {
        match rest.find(part.as_str()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pattern: &str) -> Vec<String> {
        pattern.split('*').map(str::to_owned).collect()
    }

    #[test]
    fn wildcards_match_trailing_middle_and_several_stars() {
        let cases = [
            ("value*", "value1", true),
            ("value*", "value", true),
            ("value*", "valu", false),
            ("/api/*/action", "/api/123/action", true),
            ("/api/*/action", "/api/123/other", false),
            ("/api/*/action", "/api/action", false),
            (
                "/api/*/resource/*/action",
                "/api/v1/resource/9/action",
                true,
            ),
            ("/api/*/resource/*/action", "/api/v1/thing/9/action", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*", "", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                wildcard_match(&parts(pattern), value),
                expected,
                "{pattern} vs {value}"
            );
        }
    }
}

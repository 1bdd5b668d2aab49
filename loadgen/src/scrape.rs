//! Reading a service's Prometheus page: one GET on the generator's own HTTP/1.1 client, and
//! the samples a run needs summed from the text (the ledger's reconciliation, the console's
//! service view, the stack's readiness probes).

use anyhow::Context as _;
use hyper::Uri;

use crate::client::{http, socket::Dialer};

/// The body of a GET of `url` (`http://HOST:PORT/PATH`: a /metrics page, a readiness probe);
/// an error unless 2xx.
pub async fn get_text(url: &str) -> anyhow::Result<String> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "`{url}`: only http:// URLs are scraped"
    );
    let authority = uri
        .authority()
        .filter(|authority| authority.port().is_some())
        .with_context(|| format!("`{url}` needs HOST:PORT"))?
        .to_string();
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let line = format!("GET {path} HTTP/1.1\r\n");
    let host = format!("host: {authority}\r\n");
    let mut connection = None;
    let (status, body) = http::exchange(
        &mut connection,
        &Dialer::plain(&authority),
        &[line.as_bytes(), host.as_bytes(), b"\r\n"],
    )
    .await
    .map_err(|kind| anyhow::anyhow!("GET {url}: {}", kind.label()))?;
    anyhow::ensure!((200..300).contains(&status), "GET {url}: status {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sums the samples of metric `name` in a Prometheus text page whose labels include every
/// `label="value"` of `labels` (every sample when `labels` is empty).
pub fn metric_sum(metrics_text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics_text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (found, value) = if let Some(labeled) = rest.strip_prefix('{') {
                labeled.split_once("} ")?
            } else {
                ("", rest.strip_prefix(' ')?)
            };
            let wanted = labels.iter().all(|(key, expected)| {
                found.split(',').any(|pair| {
                    pair.split_once('=')
                        .is_some_and(|(k, v)| k == *key && v.trim_matches('"') == *expected)
                })
            });
            wanted.then(|| value.trim().parse::<f64>().unwrap_or(0.0))
        })
        .sum()
}

/// Sums `sluice_decisions_total` of `resource` by outcome from a Prometheus text page:
/// (let through, refused). Let through counts shadowed denials too (the client was allowed);
/// refused counts bans with denials, as the client's ledger does. A resource without a rule of
/// its own is counted under the default rule's label, `*`.
pub fn decision_counts(metrics_text: &str, resource: &str) -> (u64, u64) {
    let name = "sluice_decisions_total";
    let has_own_rule = metrics_text.contains(&format!("resource=\"{resource}\""));
    let label = if has_own_rule { resource } else { "*" };
    let outcome = |value| {
        metric_sum(
            metrics_text,
            name,
            &[("outcome", value), ("resource", label)],
        ) as u64
    };
    (
        outcome("allowed") + outcome("shadow_denied"),
        outcome("denied") + outcome("banned"),
    )
}

/// Scrapes each `/metrics` URL and adds up the decision counters of `resource`.
pub async fn scrape_decisions(urls: &[String], resource: &str) -> anyhow::Result<(u64, u64)> {
    let (mut allowed, mut denied) = (0, 0);
    for url in urls {
        let (a, d) = decision_counts(&get_text(url).await?, resource);
        allowed += a;
        denied += d;
    }
    Ok((allowed, denied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_counters_are_read_for_the_run_resource() {
        let text = "# HELP x\nsluice_decisions_total{outcome=\"allowed\",resource=\"a\"} 5\n\
                    sluice_decisions_total{outcome=\"denied\",resource=\"a\"} 2\n\
                    sluice_decisions_total{outcome=\"shadow_denied\",resource=\"a\"} 3\n\
                    sluice_decisions_total{outcome=\"banned\",resource=\"a\"} 4\n\
                    sluice_decisions_total{outcome=\"allowed\",resource=\"*\"} 7\n\
                    sluice_decisions_total_other 100\n";
        assert_eq!(
            decision_counts(text, "a"),
            (8, 6),
            "shadowed denials were let through; bans refused"
        );
        assert_eq!(
            decision_counts(text, "unruled"),
            (7, 0),
            "a resource without a rule of its own falls under the default rule"
        );
        assert_eq!(metric_sum(text, "sluice_decisions_total_other", &[]), 100.0);
        assert_eq!(
            metric_sum(
                "sluice_fallback_active 1\nsluice_fallback_active_x 5\n",
                "sluice_fallback_active",
                &[]
            ),
            1.0
        );
    }
}

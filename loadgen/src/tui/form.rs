//! The parameter form: every field is text (or a choice), checked as it is typed, and turned
//! into a [`RunConfig`] only when all of them are valid.

use std::time::Duration;

use crate::{
    admin::AdminAccess,
    client::rls::RlsTemplate,
    engine::{LoadModel, MAX_RUN, RunConfig},
    keys::Distribution,
    schedule::Schedule,
    wire::{Endpoint, Protocol},
};

/// The timeline resolution of interactive runs: fine enough for the live charts.
pub const LIVE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Protocol,
    Targets,
    Model,
    Rate,
    Concurrency,
    Duration,
    Keys,
    Distribution,
    Resource,
    Domain,
    Descriptors,
    Cost,
    Timeout,
    Retries,
    ServiceMetrics,
}

impl Field {
    pub const ALL: [Field; 15] = [
        Field::Protocol,
        Field::Targets,
        Field::Model,
        Field::Rate,
        Field::Concurrency,
        Field::Duration,
        Field::Keys,
        Field::Distribution,
        Field::Resource,
        Field::Domain,
        Field::Descriptors,
        Field::Cost,
        Field::Timeout,
        Field::Retries,
        Field::ServiceMetrics,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Field::Protocol => "Protocol",
            Field::Targets => "Targets",
            Field::Model => "Load model",
            Field::Rate => "Rate (req/s)",
            Field::Concurrency => "Concurrency",
            Field::Duration => "Duration",
            Field::Keys => "Keys",
            Field::Distribution => "Distribution",
            Field::Resource => "Resource",
            Field::Domain => "RLS domain",
            Field::Descriptors => "RLS descriptors",
            Field::Cost => "Cost",
            Field::Timeout => "Timeout",
            Field::Retries => "Retries",
            Field::ServiceMetrics => "Service /metrics",
        }
    }

    /// A choice between fixed values rather than free text.
    pub fn is_choice(self) -> bool {
        matches!(self, Field::Protocol | Field::Model)
    }

    /// The `loadgen run` flag whose problems belong to this field.
    fn flag(self) -> &'static str {
        match self {
            Field::Protocol => "--protocol",
            Field::Targets => "--target",
            Field::Model => "--model",
            Field::Rate => "--rate",
            Field::Concurrency => "--concurrency",
            Field::Duration => "--duration",
            Field::Keys => "--keys",
            Field::Distribution => "--distribution",
            Field::Resource => "--resource",
            Field::Domain => "--domain",
            Field::Descriptors => "--descriptor",
            Field::Cost => "--cost",
            Field::Timeout => "--timeout",
            Field::Retries => "--retries",
            Field::ServiceMetrics => "--service-metrics",
        }
    }
}

/// The form's values. Targets are kept per protocol (a service listens for gRPC and HTTP on
/// different ports), so switching protocol shows that protocol's addresses.
#[derive(Debug, Clone)]
pub struct Form {
    pub protocol: Protocol,
    pub open: bool,
    grpc_targets: String,
    http_targets: String,
    rls_targets: String,
    /// Envoy RLS: the domain, and the descriptors as `--descriptor` takes them, separated by
    /// spaces.
    pub domain: String,
    pub descriptors: String,
    pub rate: String,
    pub concurrency: String,
    pub duration: String,
    pub keys: String,
    pub distribution: String,
    pub resource: String,
    pub cost: String,
    pub timeout: String,
    pub retries: String,
    pub service_metrics: String,
    pub selected: usize,
    /// The service's admin API, for the reset key; not a field of the form (its token comes
    /// from the environment).
    pub admin: Option<AdminAccess>,
}

impl Default for Form {
    fn default() -> Self {
        Self {
            protocol: Protocol::Grpc,
            open: true,
            grpc_targets: "127.0.0.1:50051".into(),
            http_targets: "127.0.0.1:8080".into(),
            rls_targets: "127.0.0.1:50051".into(),
            domain: String::new(),
            descriptors: String::new(),
            rate: "1000".into(),
            concurrency: "64".into(),
            duration: "60s".into(),
            keys: "100".into(),
            distribution: "uniform".into(),
            resource: String::new(),
            cost: "1".into(),
            timeout: "2s".into(),
            retries: "0".into(),
            service_metrics: String::new(),
            selected: 0,
            admin: None,
        }
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    text: &str,
    what: &str,
) -> Result<T, String> {
    match text.trim().parse::<T>() {
        Ok(value) if value > T::default() => Ok(value),
        _ => Err(format!("{what}: a whole number above 0")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    let value = sluice::config::parse_duration(text.trim())
        .map_err(|_| "a duration such as 500ms, 30s or 5m".to_string())?;
    if value.is_zero() {
        Err("must be above 0".into())
    } else if value > MAX_RUN {
        Err(format!("at most {} h", MAX_RUN.as_secs() / 3600))
    } else {
        Ok(value)
    }
}

fn scheme(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
        Protocol::Rls => "rls",
    }
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

impl Form {
    /// A form filled from `loadgen tui`'s flags (or the demo's nodes).
    pub fn with_targets(targets: &[Endpoint], service_metrics: &[String]) -> Self {
        let mut form = Form::default();
        let addresses = |protocol| {
            targets
                .iter()
                .filter(|t| t.protocol == protocol)
                .map(|t| t.url.split_once("://").map_or("", |(_, a)| a))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (grpc, http, rls) = (
            addresses(Protocol::Grpc),
            addresses(Protocol::Http),
            addresses(Protocol::Rls),
        );
        if !grpc.is_empty() {
            form.grpc_targets = grpc;
        }
        if !http.is_empty() {
            form.http_targets = http;
        }
        if !rls.is_empty() {
            form.rls_targets = rls;
        }
        if let Some(first) = targets.first() {
            form.protocol = first.protocol;
        }
        form.service_metrics = service_metrics.join(",");
        form
    }

    pub fn targets(&self) -> &str {
        match self.protocol {
            Protocol::Grpc => &self.grpc_targets,
            Protocol::Http => &self.http_targets,
            Protocol::Rls => &self.rls_targets,
        }
    }

    fn targets_mut(&mut self) -> &mut String {
        match self.protocol {
            Protocol::Grpc => &mut self.grpc_targets,
            Protocol::Http => &mut self.http_targets,
            Protocol::Rls => &mut self.rls_targets,
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.selected]
    }

    /// Whether the field applies to the chosen load model.
    pub fn is_active(&self, field: Field) -> bool {
        match field {
            Field::Rate => self.open,
            Field::Concurrency => !self.open,
            Field::Resource => self.protocol != Protocol::Rls,
            Field::Domain | Field::Descriptors => self.protocol == Protocol::Rls,
            _ => true,
        }
    }

    /// The field's text as shown.
    pub fn value(&self, field: Field) -> String {
        match field {
            Field::Protocol => scheme(self.protocol).into(),
            Field::Model => if self.open { "open" } else { "closed" }.into(),
            Field::Targets => self.targets().into(),
            _ => self.text(field).map_or_else(String::new, |t| t.clone()),
        }
    }

    fn text(&self, field: Field) -> Option<&String> {
        Some(match field {
            Field::Rate => &self.rate,
            Field::Concurrency => &self.concurrency,
            Field::Duration => &self.duration,
            Field::Keys => &self.keys,
            Field::Distribution => &self.distribution,
            Field::Resource => &self.resource,
            Field::Domain => &self.domain,
            Field::Descriptors => &self.descriptors,
            Field::Cost => &self.cost,
            Field::Timeout => &self.timeout,
            Field::Retries => &self.retries,
            Field::ServiceMetrics => &self.service_metrics,
            Field::Protocol | Field::Model | Field::Targets => return None,
        })
    }

    fn text_mut(&mut self, field: Field) -> Option<&mut String> {
        Some(match field {
            Field::Targets => self.targets_mut(),
            Field::Rate => &mut self.rate,
            Field::Concurrency => &mut self.concurrency,
            Field::Duration => &mut self.duration,
            Field::Keys => &mut self.keys,
            Field::Distribution => &mut self.distribution,
            Field::Resource => &mut self.resource,
            Field::Domain => &mut self.domain,
            Field::Descriptors => &mut self.descriptors,
            Field::Cost => &mut self.cost,
            Field::Timeout => &mut self.timeout,
            Field::Retries => &mut self.retries,
            Field::ServiceMetrics => &mut self.service_metrics,
            Field::Protocol | Field::Model => return None,
        })
    }

    pub fn next(&mut self) {
        self.selected = (self.selected + 1) % Field::ALL.len();
    }

    pub fn previous(&mut self) {
        self.selected = (self.selected + Field::ALL.len() - 1) % Field::ALL.len();
    }

    /// Flips the selected choice (protocol, load model); text fields ignore it.
    pub fn toggle(&mut self) {
        match self.field() {
            Field::Protocol => {
                self.protocol = match self.protocol {
                    Protocol::Grpc => Protocol::Http,
                    Protocol::Http => Protocol::Rls,
                    Protocol::Rls => Protocol::Grpc,
                }
            }
            Field::Model => self.open = !self.open,
            _ => {}
        }
    }

    pub fn type_char(&mut self, c: char) {
        let field = self.field();
        if let Some(text) = self.text_mut(field)
            && text.len() < 256
            && !c.is_control()
        {
            text.push(c);
        }
    }

    pub fn backspace(&mut self) {
        let field = self.field();
        if let Some(text) = self.text_mut(field) {
            text.pop();
        }
    }

    /// What is wrong with `field` as typed, if anything.
    pub fn problem(&self, field: Field) -> Option<String> {
        if !self.is_active(field) {
            return None;
        }
        let text = self.value(field);
        let text = text.trim();
        let result: Result<(), String> = match field {
            Field::Protocol | Field::Model => Ok(()),
            Field::Targets => self.endpoints().map(drop),
            Field::Rate => match text.parse::<f64>() {
                Ok(rate) if rate > 0.0 && rate <= 10_000_000.0 => Ok(()),
                _ => Err("requests per second, above 0 (e.g. 1000)".into()),
            },
            Field::Concurrency => positive::<usize>(text, "requests in flight").and_then(|n| {
                (n <= 10_000)
                    .then_some(())
                    .ok_or_else(|| "at most 10000".to_string())
            }),
            Field::Duration | Field::Timeout => duration(text).map(drop),
            Field::Keys => positive::<usize>(text, "distinct keys").and_then(|n| {
                (n <= 10_000_000)
                    .then_some(())
                    .ok_or_else(|| "at most 10000000".to_string())
            }),
            Field::Distribution => text.parse::<Distribution>().map(drop),
            Field::Resource => text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
                .then_some(())
                .ok_or_else(|| "use A-Z a-z 0-9 _ - . : / (empty: the default rule)".into()),
            Field::Domain => (!text.is_empty())
                .then_some(())
                .ok_or_else(|| "the domain of the server's rate limit configuration".into()),
            Field::Descriptors => self.rls_template().map(drop),
            Field::Cost => positive::<u64>(text, "tokens per request").map(drop),
            Field::Retries => match text.parse::<u32>() {
                Ok(n) if n <= 10 => Ok(()),
                _ => Err("a whole number from 0 to 10".into()),
            },
            Field::ServiceMetrics => {
                list(text)
                    .find(|url| !url.starts_with("http://"))
                    .map_or(Ok(()), |url| {
                        Err(format!(
                            "`{url}`: URLs like http://127.0.0.1:8080/metrics, comma-separated"
                        ))
                    })
            }
        };
        result.err()
    }

    /// The RLS request the domain and descriptor fields describe.
    fn rls_template(&self) -> Result<RlsTemplate, String> {
        let descriptors = self
            .descriptors
            .split_whitespace()
            .map(RlsTemplate::parse_descriptor)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| problem.replace("--descriptor ", ""))?;
        if descriptors.is_empty() {
            return Err("key=value,key2={key} descriptors, separated by spaces".into());
        }
        Ok(RlsTemplate {
            domain: self.domain.trim().to_owned(),
            descriptors,
        })
    }

    fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        let scheme = scheme(self.protocol);
        let endpoints: Vec<Endpoint> = list(self.targets())
            .map(|address| {
                let address = address.split_once("://").map_or(address, |(_, a)| a);
                format!("{scheme}://{address}")
                    .parse::<Endpoint>()
                    .map_err(|_| format!("`{address}` is not HOST:PORT"))
            })
            .collect::<Result<_, _>>()?;
        if endpoints.is_empty() {
            return Err("at least one HOST:PORT, comma-separated".into());
        }
        Ok(endpoints)
    }

    /// Every field's problem, in form order.
    pub fn problems(&self) -> Vec<(Field, String)> {
        Field::ALL
            .iter()
            .filter_map(|&field| self.problem(field).map(|problem| (field, problem)))
            .collect()
    }

    /// The run the form describes, or the fields that are wrong.
    pub fn config(&self) -> Result<RunConfig, Vec<(Field, String)>> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let number = |field: Field| self.value(field).trim().parse::<u64>().unwrap_or(1);
        let mut config = RunConfig::new(self.endpoints().unwrap_or_default());
        config.model = if self.open {
            LoadModel::Open {
                schedule: Schedule::constant(self.rate.trim().parse().unwrap_or(1.0)),
                workers: 64,
            }
        } else {
            LoadModel::Closed {
                concurrency: number(Field::Concurrency) as usize,
            }
        };
        config.duration = duration(&self.duration).ok();
        config.keys = number(Field::Keys) as usize;
        config.distribution = self
            .distribution
            .trim()
            .parse()
            .unwrap_or(Distribution::Uniform);
        if self.protocol == Protocol::Rls {
            config.rls = self.rls_template().ok();
        } else {
            config.resource = self.resource.trim().to_owned();
        }
        config.cost = number(Field::Cost);
        config.timeout = duration(&self.timeout).unwrap_or(config.timeout);
        config.retries = self.retries.trim().parse().unwrap_or(0);
        config.interval = LIVE_INTERVAL;
        config.admin = self.admin.clone();
        // The engine's own checks, placed next to the field they concern.
        let problems: Vec<(Field, String)> = config
            .problems()
            .into_iter()
            .map(|problem| {
                let field = Field::ALL
                    .into_iter()
                    .find(|field| problem.starts_with(field.flag()))
                    .unwrap_or(Field::Targets);
                let reason = problem
                    .split_once(": ")
                    .map_or(problem.as_str(), |(_, r)| r)
                    .to_owned();
                (field, reason)
            })
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// The /metrics URLs to scrape: those given, or each HTTP target's own.
    pub fn metrics_urls(&self) -> Vec<String> {
        let given: Vec<String> = list(&self.service_metrics).map(str::to_owned).collect();
        if !given.is_empty() || self.protocol != Protocol::Http {
            return given;
        }
        self.endpoints()
            .unwrap_or_default()
            .iter()
            .map(|endpoint| format!("{}/metrics", endpoint.url))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(form: &mut Form, field: Field) {
        form.selected = Field::ALL.iter().position(|f| *f == field).unwrap();
    }

    #[test]
    fn bad_fields_say_what_is_wrong_as_they_are_typed() {
        let mut form = Form::default();
        assert!(form.problems().is_empty(), "{:?}", form.problems());
        select(&mut form, Field::Rate);
        form.backspace();
        form.backspace();
        form.backspace();
        form.backspace();
        assert!(form.problem(Field::Rate).unwrap().contains("above 0"));
        form.type_char('x');
        assert!(form.problem(Field::Rate).is_some());
        form.backspace();
        form.type_char('5');
        assert_eq!(form.problem(Field::Rate), None);

        select(&mut form, Field::Distribution);
        form.type_char('!');
        assert!(form.problem(Field::Distribution).unwrap().contains("zipf"));
        select(&mut form, Field::Duration);
        form.type_char('q');
        assert!(form.problem(Field::Duration).unwrap().contains("30s"));
        let problems = form.config().unwrap_err();
        assert_eq!(
            problems.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [Field::Duration, Field::Distribution]
        );
    }

    #[test]
    fn the_inactive_model_field_is_not_checked_and_choices_toggle() {
        let mut form = Form {
            concurrency: "0".into(),
            ..Form::default()
        };
        assert_eq!(form.problem(Field::Concurrency), None);
        select(&mut form, Field::Model);
        form.toggle();
        assert!(!form.open);
        assert!(form.problem(Field::Concurrency).is_some());
        form.concurrency = "8".into();
        let config = form.config().unwrap();
        assert!(matches!(config.model, LoadModel::Closed { concurrency: 8 }));
    }

    #[test]
    fn targets_are_kept_per_protocol() {
        let targets: Vec<Endpoint> = ["grpc://127.0.0.1:1", "http://127.0.0.1:2"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let mut form = Form::with_targets(&targets, &[]);
        assert_eq!(form.targets(), "127.0.0.1:1");
        assert!(form.metrics_urls().is_empty());
        form.toggle();
        assert_eq!(form.targets(), "127.0.0.1:2");
        assert_eq!(form.metrics_urls(), ["http://127.0.0.1:2/metrics"]);
        let config = form.config().unwrap();
        assert_eq!(config.targets[0].url, "http://127.0.0.1:2");
        assert_eq!(config.interval, LIVE_INTERVAL);
        select(&mut form, Field::Targets);
        form.type_char(',');
        form.type_char('x');
        assert!(form.problem(Field::Targets).unwrap().contains("HOST:PORT"));
    }

    #[test]
    fn the_rls_protocol_asks_for_a_domain_and_descriptors() {
        let mut form = Form::default();
        select(&mut form, Field::Protocol);
        form.toggle();
        form.toggle();
        assert_eq!(form.protocol, Protocol::Rls);
        assert_eq!(form.problem(Field::Resource), None, "inactive for RLS");
        assert!(form.problem(Field::Domain).is_some());
        assert!(form.problem(Field::Descriptors).is_some());
        form.domain = "edge".into();
        form.descriptors = "generic_key=api route=checkout,user={key}".into();
        let config = form.config().unwrap();
        assert_eq!(config.targets[0].url, "rls://127.0.0.1:50051");
        let template = config.rls.unwrap();
        assert_eq!(template.domain, "edge");
        assert_eq!(template.descriptors.len(), 2);
        assert_eq!(template.keyed(), Some((1, 1)));
        form.descriptors = "no-equals".into();
        assert!(
            form.problem(Field::Descriptors)
                .unwrap()
                .contains("key=value")
        );
        form.toggle();
        assert_eq!(form.protocol, Protocol::Grpc);
    }
}

//! Goose scenarios against Sluice's `POST /check`, for users who write HTTP load in Rust:
//!
//! - `steady`: each user spreads requests over `SLUICE_KEYS` keys (`SLUICE_DISTRIBUTION`, the
//!   same key space and distributions as `loadgen`);
//! - `abuser`: every request uses one hot key (`<SLUICE_KEY_PREFIX>abuser`), so most are
//!   denied;
//! - `mixed`: nine steady requests to one abusive one.
//!
//! A 429 (denied) or 403 (banned) is the limiter working, so it counts as a success (Goose's
//! status-code table keeps 200, 429 and 403 apart); a response without the RateLimit headers,
//! or a 429 or 403 without Retry-After, is a failure.

use std::sync::Arc;

use goose::prelude::*;
use sluice_keys::{Distribution, KeyPicker, KeySpace};

/// What the scenarios send, from `SLUICE_*` environment variables (Goose owns the flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: KeySpace,
    pub distribution: Distribution,
    /// `/check` with its query: the resource and the cost.
    pub path: String,
    pub abuser_key: String,
}

impl Settings {
    pub fn new(
        keys: usize,
        distribution: Distribution,
        resource: &str,
        cost: u64,
        key_prefix: &str,
    ) -> Self {
        let mut query = Vec::new();
        if !resource.is_empty() {
            query.push(format!("resource={resource}"));
        }
        if cost != 1 {
            query.push(format!("cost={cost}"));
        }
        let path = if query.is_empty() {
            "/check".to_owned()
        } else {
            format!("/check?{}", query.join("&"))
        };
        Self {
            keys: KeySpace::new(key_prefix, keys),
            distribution,
            path,
            abuser_key: format!("{key_prefix}abuser"),
        }
    }

    /// `SLUICE_KEYS` (1000), `SLUICE_DISTRIBUTION` (uniform), `SLUICE_RESOURCE` (default),
    /// `SLUICE_COST` (1), `SLUICE_KEY_PREFIX` (goose-).
    pub fn from_env() -> anyhow::Result<Self> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let keys: usize = var("SLUICE_KEYS", "1000")
            .parse()
            .ok()
            .filter(|&keys| (1..=10_000_000).contains(&keys))
            .ok_or_else(|| anyhow::anyhow!("SLUICE_KEYS: use a whole number from 1 to 10000000"))?;
        let distribution: Distribution = var("SLUICE_DISTRIBUTION", "uniform")
            .parse()
            .map_err(|err| anyhow::anyhow!("SLUICE_DISTRIBUTION: {err}"))?;
        let resource = var("SLUICE_RESOURCE", "");
        if !resource
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            anyhow::bail!("SLUICE_RESOURCE: use letters, digits, `_`, `-` and `.` only");
        }
        let cost: u64 = var("SLUICE_COST", "1")
            .parse()
            .ok()
            .filter(|&cost| cost >= 1)
            .ok_or_else(|| anyhow::anyhow!("SLUICE_COST: use a whole number from 1"))?;
        let prefix = var("SLUICE_KEY_PREFIX", "goose-");
        Ok(Self::new(keys, distribution, &resource, cost, &prefix))
    }
}

/// Which key a request spends.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Steady,
    Abuser,
}

/// The three scenarios; `--scenarios steady` (or abuser, mixed) picks one.
pub fn register(attack: GooseAttack, settings: Settings) -> Result<GooseAttack, GooseError> {
    let settings = Arc::new(settings);
    let transaction = |caller: Caller, name: &'static str| {
        let settings = settings.clone();
        let function: TransactionFunction = Arc::new(move |user| {
            let settings = settings.clone();
            Box::pin(async move { check(user, &settings, caller, name).await })
        });
        Transaction::new(function).set_name(name)
    };
    Ok(attack
        .register_scenario(
            scenario!("steady").register_transaction(transaction(Caller::Steady, "check steady")),
        )
        .register_scenario(
            scenario!("abuser").register_transaction(transaction(Caller::Abuser, "check abuser")),
        )
        .register_scenario(
            scenario!("mixed")
                .register_transaction(transaction(Caller::Steady, "check steady").set_weight(9)?)
                .register_transaction(transaction(Caller::Abuser, "check abuser")),
        ))
}

async fn check(
    user: &mut GooseUser,
    settings: &Settings,
    caller: Caller,
    name: &'static str,
) -> TransactionResult {
    let key = match caller {
        Caller::Steady => {
            if user.get_session_data::<KeyPicker>().is_none() {
                let seed = user.weighted_users_index as u64;
                user.set_session_data(KeyPicker::new(
                    settings.distribution,
                    settings.keys.len(),
                    seed,
                ));
            }
            let picker = user
                .get_session_data_mut::<KeyPicker>()
                .expect("set just above");
            settings.keys.name(picker.next_index())
        }
        Caller::Abuser => settings.abuser_key.as_str(),
    };
    let builder = user
        .get_request_builder(&GooseMethod::Post, &settings.path)?
        .header("x-api-key", key);
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path(settings.path.as_str())
        .name(name)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    // Transport errors and 5xx are already failures.
    let Ok(response) = &goose.response else {
        return Ok(());
    };
    let status = response.status().as_u16();
    let headers = response.headers();
    let refused = status == 429 || status == 403;
    let problem = if status != 200 && !refused {
        Some("status other than 200, 429 or 403")
    } else if !headers.contains_key("ratelimit-policy") || !headers.contains_key("ratelimit") {
        Some("RateLimit-Policy or RateLimit header missing")
    } else if refused && !headers.contains_key("retry-after") {
        Some("429 or 403 without Retry-After")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            let headers = headers.clone();
            user.set_failure(problem, &mut goose.request, Some(&headers), None)
        }
        None if refused => user.set_success(&mut goose.request),
        None => Ok(()),
    }
}

//! Central configuration for a fleet: the rules live in Redis as one versioned document,
//! written once and followed by every node. A write (the admin API's `PUT /v1/rules`) replaces
//! the document in one script call, compare-and-set on its version, and publishes the new
//! version; nodes wake on the message and also check the version every `check_interval`, so a
//! missed message (a reconnect, a partition) is caught within one interval. Each node validates
//! a new document against its own settings before applying it ([`Config::with_rules`]); a
//! document it cannot apply changes nothing there, and is logged and counted.
//!
//! The document is a hash at `key`: `version` (a counter), `text` (TOML of only
//! `[default_rule]` and `[rules.*]`), `updated_by` (the admin token's name), `updated_at_ms`.
//! Change notices go to the channel `<key>:changed`.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    config::{CentralSource, Config},
    limiter::Limiter,
    reload,
    store::Backend,
};

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("the central rules store at {url} failed: {source}")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error(
        "the rules changed since version {expected} (now {current}); read them again (GET /v1/rules) and reapply the change"
    )]
    Conflict { expected: u64, current: u64 },
}

/// One version of the central rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesDocument {
    pub version: u64,
    pub text: String,
    pub updated_by: String,
    pub updated_at_ms: u64,
}

/// Replaces the document if its version is still ARGV[1] ("" = whatever it is) and publishes
/// the new version. Returns {1, new version} or {0, current version}.
const WRITE_SCRIPT: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then return {0, current} end
local version = current + 1
redis.call('HSET', KEYS[1], 'version', version, 'text', ARGV[2], 'updated_by', ARGV[3],
  'updated_at_ms', ARGV[4])
redis.call('PUBLISH', KEYS[1] .. ':changed', version)
return {1, version}
";

/// The fleet's rules document in Redis.
#[derive(Clone)]
pub struct CentralRules {
    client: redis::Client,
    connection: redis::aio::ConnectionManager,
    source: CentralSource,
}

impl std::fmt::Debug for CentralRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralRules")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CentralRules {
    pub async fn connect(source: &CentralSource) -> Result<Self, CentralError> {
        let fail = |err| CentralError::Redis {
            url: source.url.clone(),
            source: err,
        };
        let client = redis::Client::open(source.url.as_str()).map_err(fail)?;
        let connection = redis::aio::ConnectionManager::new(client.clone())
            .await
            .map_err(fail)?;
        Ok(Self {
            client,
            connection,
            source: source.clone(),
        })
    }

    fn failed(&self, err: redis::RedisError) -> CentralError {
        CentralError::Redis {
            url: self.source.url.clone(),
            source: err,
        }
    }

    /// The document's version; 0 when there is none yet.
    pub async fn version(&self) -> Result<u64, CentralError> {
        let version: Option<u64> = redis::cmd("HGET")
            .arg(&self.source.key)
            .arg("version")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|err| self.failed(err))?;
        Ok(version.unwrap_or(0))
    }

    /// The document, if one was ever written.
    pub async fn read(&self) -> Result<Option<RulesDocument>, CentralError> {
        let (version, text, updated_by, updated_at_ms): (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<u64>,
        ) = redis::cmd("HMGET")
            .arg(&self.source.key)
            .arg(&["version", "text", "updated_by", "updated_at_ms"])
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|err| self.failed(err))?;
        Ok(match (version, text) {
            (Some(version), Some(text)) => Some(RulesDocument {
                version,
                text,
                updated_by: updated_by.unwrap_or_default(),
                updated_at_ms: updated_at_ms.unwrap_or(0),
            }),
            _ => None,
        })
    }

    /// Writes `text` as the next version, if the document is still at `expected` (any version
    /// when `None`), and tells every node. Returns the new version.
    pub async fn write(
        &self,
        text: &str,
        expected: Option<u64>,
        who: &str,
    ) -> Result<u64, CentralError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let (written, version): (u8, u64) = redis::Script::new(WRITE_SCRIPT)
            .key(&self.source.key)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(text)
            .arg(who)
            .arg(now_ms)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|err| self.failed(err))?;
        if written == 1 {
            Ok(version)
        } else {
            Err(CentralError::Conflict {
                expected: expected.unwrap_or(0),
                current: version,
            })
        }
    }

    /// Sends one message on `wake` per change notice, resubscribing (after a second) whenever
    /// the subscription drops, until `wake` is closed.
    async fn listen(self, wake: mpsc::Sender<()>) {
        let channel = format!("{}:changed", self.source.key);
        while !wake.is_closed() {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        // A notice may have been missed while unsubscribed: check now.
                        let _ = wake.try_send(());
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            let _ = wake.try_send(());
                        }
                    }
                }
                Err(err) => {
                    warn!(url = %self.source.url, error = %err, "central rules: cannot subscribe; retrying")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Follows the central document until `shutdown`: applies each new version valid for this
/// node, on a change notice, every `check_interval`, and on each message of `requests`
/// (SIGHUP).
pub async fn follow(
    limiter: Arc<Limiter<Backend>>,
    running: Config,
    central: CentralRules,
    mut requests: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) {
    let stopping = crate::shutdown::requested(shutdown);
    tokio::pin!(stopping);
    let (wake, mut woken) = mpsc::channel(1);
    let listener = tokio::spawn(central.clone().listen(wake));
    let mut ticker = tokio::time::interval(central.source.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut follower = Follower {
        limiter,
        running,
        central,
        seen: None,
    };
    loop {
        tokio::select! {
            () = &mut stopping => break,
            _ = woken.recv() => follower.check().await,
            _ = ticker.tick() => follower.check().await,
            request = requests.recv() => {
                if request.is_none() {
                    break;
                }
                follower.seen = None;
                follower.check().await;
            }
        }
    }
    listener.abort();
}

struct Follower {
    limiter: Arc<Limiter<Backend>>,
    running: Config,
    central: CentralRules,
    /// The last version looked at, applied or not (a version this node cannot apply is
    /// reported once, not every interval).
    seen: Option<u64>,
}

impl Follower {
    async fn check(&mut self) {
        let document = match self.central.version().await {
            Ok(version) if Some(version) == self.seen || version == 0 => return,
            Ok(_) => self.central.read().await,
            Err(err) => Err(err),
        };
        let document = match document {
            Ok(Some(document)) => document,
            Ok(None) => return,
            Err(err) => {
                warn!(error = %err, "central rules: cannot read; keeping the running rules");
                return;
            }
        };
        self.seen = Some(document.version);
        let metrics = self.limiter.metrics();
        let origin = format!("central rules version {}", document.version);
        match self.running.with_rules(&document.text, &origin) {
            Ok(next) => {
                let config_version = next.version.clone();
                if reload::adopt(&self.limiter, &mut self.running, next) {
                    metrics.config_reload("applied");
                    info!(
                        version = document.version,
                        updated_by = %document.updated_by,
                        %config_version,
                        "central rules applied"
                    );
                } else {
                    metrics.config_reload("unchanged");
                }
                metrics.set_central_version(document.version);
            }
            Err(err) => {
                metrics.config_reload("invalid");
                warn!(
                    version = document.version,
                    "central rules: this node cannot apply them; keeping the running rules: {err}"
                );
            }
        }
    }
}

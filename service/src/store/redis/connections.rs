//! The connections a Redis store calls through.
//!
//! A single Redis gets a pool of multiplexed connections; a Cluster one connection that routes
//! each command to the node owning its key; Sentinels are asked for the primary's address, and
//! asked again on every [`Connections::reconnect`], so a failover moves the node to the new
//! primary. `reconnect` builds a whole new pool and swaps it in only once it answers: a
//! partition heals without waiting out TCP's retransmission backoff on the old sockets, and a
//! call never sees half a pool.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use redis::{
    RedisResult,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::Sentinel,
};

use crate::config::RedisConfig;

/// Where the store finds Redis.
enum Target {
    Single(Box<redis::Client>),
    /// Sentinels, asked for the primary each time the pool is built (one at a time: the
    /// lookup reuses its connections to them).
    Sentinel {
        master: String,
        sentinels: tokio::sync::Mutex<Sentinel>,
    },
    Cluster(Box<ClusterClient>),
}

/// The store's connections: a pool (one member for a Cluster), swapped whole on reconnect.
pub(super) struct Connections {
    target: Target,
    pool_size: usize,
    manager_config: ConnectionManagerConfig,
    /// Longest a reconnect may take to reach the primary (Sentinel lookup included).
    connect_timeout: Duration,
    pool: ArcSwap<Pool>,
    /// The last generation handed to a pool.
    generations: AtomicU64,
    next: AtomicUsize,
}

/// The connections in use, and which reconnect built them (0: the first).
struct Pool {
    links: Vec<Link>,
    generation: u64,
}

/// One connection picked for a call, its place in the pool (its lane), and the pool's
/// generation (see [`Connections::replaced_since`]).
#[derive(Clone)]
pub(super) struct Picked {
    pub connection: Link,
    pub lane: usize,
    pub generation: u64,
}

/// A pool member, or the cluster connection (which routes each command to the node owning its
/// key); both multiplex concurrent calls on their sockets.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connections {
    /// Connects (asking the Sentinels first when configured) and fills the pool.
    pub async fn connect(config: &RedisConfig) -> RedisResult<Self> {
        let connect_timeout = config.deadline.max(Duration::from_millis(500));
        // A call's own wait is bounded by the store; this only ends a connection's that the
        // store gave up on.
        let response_timeout = config.deadline + config.queue_timeout;
        let target = if config.cluster {
            Target::Cluster(Box::new(
                ClusterClient::builder(config.urls.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(1)
                    .build()?,
            ))
        } else if let Some(sentinel) = &config.sentinel {
            Target::Sentinel {
                master: sentinel.master.clone(),
                sentinels: tokio::sync::Mutex::new(Sentinel::build(sentinel.urls.clone())?),
            }
        } else {
            Target::Single(Box::new(redis::Client::open(config.urls[0].as_str())?))
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connections = Self {
            target,
            pool_size: config.pool_size,
            manager_config,
            connect_timeout,
            pool: ArcSwap::from_pointee(Pool {
                links: Vec::new(),
                generation: 0,
            }),
            generations: AtomicU64::new(0),
            next: AtomicUsize::new(0),
        };
        let links = connections.build_pool().await?;
        connections.pool.store(Arc::new(Pool {
            links,
            generation: 0,
        }));
        Ok(connections)
    }

    /// The next pool member, round robin.
    pub fn pick(&self) -> Picked {
        let pool = self.pool.load();
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % pool.links.len();
        Picked {
            connection: pool.links[lane].clone(),
            lane,
            generation: pool.generation,
        }
    }

    /// Whether a reconnect has replaced the pool a call picked its connection from: that
    /// connection was given up on, and the new ones answering says nothing of it (after a
    /// partition heals, its socket may sit in TCP's retransmission backoff for seconds).
    pub fn replaced_since(&self, generation: u64) -> bool {
        self.pool.load().generation != generation
    }

    /// Builds a new pool (finding the primary again behind Sentinels), checks it answers
    /// `probe` within `deadline`, and only then puts it in place of the old one.
    pub async fn reconnect<T: redis::FromRedisValue>(
        &self,
        probe: &redis::Cmd,
        deadline: Duration,
    ) -> RedisResult<T> {
        let links = match tokio::time::timeout(self.connect_timeout, self.build_pool()).await {
            Ok(links) => links?,
            Err(_) => return Err(timed_out("connecting")),
        };
        let mut first = links[0].clone();
        let answer = match tokio::time::timeout(deadline, probe.query_async(&mut first)).await {
            Ok(answer) => answer?,
            Err(_) => return Err(timed_out("the probe")),
        };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.pool.store(Arc::new(Pool { links, generation }));
        Ok(answer)
    }

    async fn build_pool(&self) -> RedisResult<Vec<Link>> {
        match &self.target {
            Target::Cluster(client) => {
                Ok(vec![Link::Cluster(client.get_async_connection().await?)])
            }
            Target::Single(client) => self.build_single(client).await,
            Target::Sentinel { master, sentinels } => {
                let client = sentinels
                    .lock()
                    .await
                    .async_master_for(master, None)
                    .await?;
                tracing::debug!(primary = ?client.get_connection_info().addr(), "sentinels named the primary");
                self.build_single(&client).await
            }
        }
    }

    async fn build_single(&self, client: &redis::Client) -> RedisResult<Vec<Link>> {
        let mut pool = Vec::with_capacity(self.pool_size);
        for _ in 0..self.pool_size {
            let manager = client
                .get_connection_manager_with_config(self.manager_config.clone())
                .await?;
            pool.push(Link::Single(manager));
        }
        Ok(pool)
    }
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} took too long"),
    ))
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
        }
    }
}

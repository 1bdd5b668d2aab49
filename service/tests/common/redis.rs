//! Real redis-server processes for tests (see `sluice_testkit::local_redis`); a missing program fails
//! the test with the install hint.

pub use sluice_testkit::local_redis::{LocalRedis, LocalRedisCluster};

/// Starts a redis-server, or fails the test saying how to install it.
pub fn server() -> LocalRedis {
    LocalRedis::start().unwrap_or_else(|err| panic!("{err}"))
}

/// Starts a 3-master cluster, or fails the test saying how to install Redis.
pub fn cluster() -> LocalRedisCluster {
    LocalRedisCluster::start().unwrap_or_else(|err| panic!("{err}"))
}

/// The `[backend]` sections of a node on Redis at `urls` (a Cluster when `cluster`).
pub fn backend(urls: &[String], cluster: bool) -> String {
    let urls: Vec<String> = urls.iter().map(|url| format!("\"{url}\"")).collect();
    format!(
        "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [{}]\ncluster = {cluster}\ndeadline = \"1s\"\npool_size = 2\n",
        urls.join(", ")
    )
}

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

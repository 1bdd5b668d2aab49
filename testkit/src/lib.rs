//! What Sluice's tests, benchmarks and the load generator's demo need from the machine, kept
//! out of the service library: private `redis-server` processes and clusters on free loopback
//! ports ([`local_redis`]), and running the outside programs tests drive ([`tools`]). Never a
//! mock, never a skip: a missing program fails with how to install it.

pub mod local_redis;
pub mod tools;

//! What Sluice's tests, benchmarks and the load generator's demo need from the machine, kept
//! out of the service library: private `redis-server` processes and clusters on free loopback
//! ports ([`local_redis`]), running the outside programs tests drive ([`tools`]), and a
//! folder of its own for a test's files ([`folder`]). Never a
//! mock, never a skip: a missing program fails with how to install it.

pub mod folder;
pub mod local_redis;
pub mod tools;

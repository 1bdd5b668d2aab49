//! What Sluice's tests, benchmarks and the load generator's demo need from the machine, kept
//! out of the service library: private `redis-server` processes and clusters on free loopback
//! ports ([`local_redis`]) and a primary, replica and Sentinels ([`local_sentinel`]), running the outside programs tests drive ([`tools`]), and a
//! folder of its own for a test's files ([`folder`]). Never a
//! mock, never a skip: a missing program fails with how to install it.

pub mod delay_proxy;
pub mod folder;
pub mod local_redis;
pub mod local_sentinel;
pub mod netns;
pub mod tools;

/// This crate's tests that bind ports or start programs run one at a time: a program started
/// by one (fork, then exec) briefly holds a copy of every socket another has open, so a port
/// another test just released can still read as taken.
#[cfg(test)]
fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

//! A one-shot timer with the kernel's full resolution, for the pacing task.
//!
//! tokio's own timer keeps one-millisecond slots, so `sleep_until` wakes up to a millisecond
//! late; a request sent that late has the lateness charged to the service as latency. A timerfd
//! expires on the high-resolution clock, and the runtime's reactor watches it like a socket, so
//! the task sleeping on it wakes on time without a thread of its own (no cross-thread wake per
//! request). Elsewhere than Linux it falls back to tokio's timer.

use std::{io, time::Instant};

#[cfg(target_os = "linux")]
pub(super) struct PreciseTimer(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

#[cfg(target_os = "linux")]
impl PreciseTimer {
    pub(super) fn new() -> io::Result<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the OwnedFd is the timer's only owner and moves into the AsyncFd, so the
        // descriptor stays open and the same for as long as the AsyncFd holds it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        Ok(Self(registered.map_err(io::Error::from)?))
    }

    /// Sleeps until `at` (returns at once if it has passed). Cancel-safe: re-arming discards
    /// an expiry nobody waited for.
    pub(super) async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let expiry = Itimerspec {
            it_interval: zero,
            it_value: Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos() as _,
            },
        };
        // Re-arming also zeroes the expiry count, so a stale readiness reads as WouldBlock.
        timerfd_settime(self.0.get_ref(), TimerfdTimerFlags::empty(), &expiry)?;
        loop {
            let mut ready = self.0.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(ready.get_inner(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) struct PreciseTimer;

#[cfg(not(target_os = "linux"))]
impl PreciseTimer {
    pub(super) fn new() -> io::Result<Self> {
        Ok(Self)
    }

    pub(super) async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        tokio::time::sleep_until(at.into()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// tokio's timer would wake these sleeps up to a millisecond late; this one must not. The
    /// bound is loose (a loaded machine delays any wake-up), the median robust to outliers.
    #[tokio::test]
    async fn wakes_within_a_fraction_of_a_millisecond() {
        let mut timer = PreciseTimer::new().unwrap();
        let mut late = Vec::new();
        for _ in 0..40 {
            let at = Instant::now() + Duration::from_micros(300);
            timer.sleep_until(at).await.unwrap();
            let now = Instant::now();
            assert!(now >= at, "woke {:?} early", at - now);
            late.push(now - at);
        }
        late.sort();
        assert!(
            late[late.len() / 2] < Duration::from_micros(400),
            "median lateness {:?}",
            late[late.len() / 2]
        );
    }

    /// A sleep given up before it expires (the pacing task's select) must not leave an expiry
    /// behind that ends the next sleep early.
    #[tokio::test]
    async fn an_abandoned_sleep_does_not_end_the_next_one_early() {
        let mut timer = PreciseTimer::new().unwrap();
        let abandoned = timer.sleep_until(Instant::now() + Duration::from_millis(1));
        let _ = tokio::time::timeout(Duration::from_micros(100), abandoned).await;
        // The first expiry passes unobserved while nobody waits.
        std::thread::sleep(Duration::from_millis(3));
        let at = Instant::now() + Duration::from_millis(20);
        timer.sleep_until(at).await.unwrap();
        assert!(Instant::now() >= at, "woke before its time");
    }

    #[tokio::test]
    async fn a_time_in_the_past_returns_at_once() {
        let mut timer = PreciseTimer::new().unwrap();
        let started = Instant::now();
        timer.sleep_until(started).await.unwrap();
        timer
            .sleep_until(started - Duration::from_secs(1))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}

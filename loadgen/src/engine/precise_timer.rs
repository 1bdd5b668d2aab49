//! A one-shot timer with the kernel's full resolution, for a worker waiting on its ticket.
//!
//! tokio's own timer keeps one-millisecond slots, so `sleep_until` wakes up to a millisecond
//! late; a request sent that late has the lateness charged to the service as latency. A timerfd
//! expires on the high-resolution clock, and the runtime's reactor watches it like a socket, so
//! the task sleeping on it wakes on time without a thread of its own (no cross-thread wake per
//! request). Elsewhere than Linux it falls back to tokio's timer.
//!
//! Even an exact expiry reaches the task late: an idle core must be woken, on a virtual machine
//! by the hypervisor, and the reactor must run. The timer learns that delay ([`WakeLead`]), arms
//! itself that much early, and spins the few microseconds left when it wakes before its time;
//! it never returns early.

use std::{
    io,
    time::{Duration, Instant},
};

/// The most the timer arms early, so a spell of slow wake-ups cannot make it spin long.
const MAX_LEAD: Duration = Duration::from_micros(200);

/// An estimate of how late a wake-up comes, kept at a low quantile of the delays seen: most
/// wake-ups then still come a little late (no spinning), and the rest spin only briefly.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct WakeLead {
    nanos: u64,
}

impl WakeLead {
    /// The share of wake-ups that should come before their time (and spin).
    const EARLY_SHARE: f64 = 0.2;
    /// How far one wake-up moves the estimate: up by `STEP * EARLY_SHARE` for a late one, down
    /// by `STEP * (1 - EARLY_SHARE)` for an early one, which settles where the early share is
    /// `EARLY_SHARE` (a stochastic quantile estimate: no samples kept).
    const STEP_NANOS: f64 = 5_000.0;

    fn get(self) -> Duration {
        Duration::from_nanos(self.nanos)
    }

    /// Takes in one wake-up's delay past the moment the timer was armed for.
    fn observe(&mut self, delay: Duration) {
        self.nanos = if delay > self.get() {
            self.nanos + (Self::STEP_NANOS * Self::EARLY_SHARE) as u64
        } else {
            self.nanos
                .saturating_sub((Self::STEP_NANOS * (1.0 - Self::EARLY_SHARE)) as u64)
        }
        .min(MAX_LEAD.as_nanos() as u64);
    }
}

#[cfg(target_os = "linux")]
pub(super) struct PreciseTimer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    lead: WakeLead,
}

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
        Ok(Self {
            fd: registered.map_err(io::Error::from)?,
            lead: WakeLead::default(),
        })
    }

    /// Sleeps until `at` (returns at once if it has passed), never returning before it.
    /// Cancel-safe: an expiry nobody waited for only costs the next sleep one more look at the
    /// clock.
    pub(super) async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            let now = Instant::now();
            let armed_for = at.checked_sub(self.lead.get()).unwrap_or(at);
            if now >= armed_for {
                // Within the lead: the rest is shorter than a wake-up takes.
                while Instant::now() < at {
                    std::hint::spin_loop();
                }
                return Ok(());
            }
            let wait = armed_for - now;
            let expiry = Itimerspec {
                it_interval: zero,
                it_value: Timespec {
                    tv_sec: wait.as_secs() as _,
                    tv_nsec: wait.subsec_nanos() as _,
                },
            };
            // Re-arming zeroes the expiry count, and the reactor (edge-triggered) reports every
            // expiry as a new edge, so the count is never read: one system call fewer per sleep.
            // A readiness left from an abandoned sleep ends this wait early; the clock says so
            // and the loop arms the timer again.
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &expiry)?;
            self.fd.readable().await?.clear_ready();
            let woke = Instant::now();
            if woke >= armed_for {
                self.lead.observe(woke - armed_for);
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

    /// Delays spread evenly over 30..50 us, in a scrambled order: the estimate must settle
    /// near the 20th percentile (34 us), where one wake-up in five comes early.
    #[test]
    fn the_lead_settles_at_the_low_quantile_of_the_delays() {
        let mut lead = WakeLead::default();
        for i in 0..20_000u64 {
            let spread = (i * 7_919) % 20_000;
            lead.observe(Duration::from_nanos(30_000 + spread));
        }
        let settled = lead.get();
        assert!(
            (Duration::from_micros(31)..=Duration::from_micros(37)).contains(&settled),
            "{settled:?}"
        );
        // Wake-ups that turn prompt bring it back down.
        for _ in 0..20_000 {
            lead.observe(Duration::ZERO);
        }
        assert_eq!(lead.get(), Duration::ZERO);
    }

    #[test]
    fn the_lead_never_passes_its_bound() {
        let mut lead = WakeLead::default();
        for _ in 0..10_000 {
            lead.observe(Duration::from_secs(1));
        }
        assert_eq!(lead.get(), MAX_LEAD);
    }

    /// The largest lead arms the timer early every time; the spin must still hold each sleep
    /// to its time.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_learned_lead_never_ends_a_sleep_early() {
        let mut timer = PreciseTimer::new().unwrap();
        timer.lead = WakeLead {
            nanos: MAX_LEAD.as_nanos() as u64,
        };
        for _ in 0..20 {
            let at = Instant::now() + Duration::from_micros(500);
            timer.sleep_until(at).await.unwrap();
            let now = Instant::now();
            assert!(now >= at, "woke {:?} early", at - now);
        }
    }

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

    /// A sleep given up before it expires (a worker woken by a live change) must not leave an
    /// expiry behind that ends the next sleep early.
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

//! The backend's capacity as a queue: `servers` requests are worked on at once, each for
//! `service_time`; the rest wait in line, first come first served. Its latency therefore grows
//! with what is in flight, as a real service's does: a request that finds `q` waiting takes
//! about `(q / servers + 1) * service_time`, and past `servers / service_time` requests a
//! second the line, and the latency, grow without bound until requests time out.

use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// The backend's servers and line.
#[derive(Debug)]
pub struct Queue {
    servers: Semaphore,
    server_count: usize,
    service_time: Duration,
    timeout: Duration,
}

/// A request that waited in line longer than the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    pub waited: Duration,
}

impl Queue {
    pub fn new(servers: usize, service_time: Duration, timeout: Duration) -> Self {
        Self {
            servers: Semaphore::new(servers.max(1)),
            server_count: servers.max(1),
            service_time,
            timeout,
        }
    }

    /// Requests a second it serves at most.
    pub fn capacity(&self) -> f64 {
        self.server_count as f64 / self.service_time.as_secs_f64()
    }

    /// Waits for a server and works for the service time; how long it all took, or the wait
    /// when the line was longer than the timeout.
    pub async fn serve(&self) -> Result<Duration, TimedOut> {
        let arrived = Instant::now();
        let permit = tokio::time::timeout(self.timeout, self.servers.acquire())
            .await
            .map_err(|_| TimedOut {
                waited: arrived.elapsed(),
            })?
            .expect("the semaphore is never closed");
        tokio::time::sleep(self.service_time).await;
        drop(permit);
        Ok(arrived.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn latency_grows_with_the_line_and_a_long_line_times_out() {
        let queue = std::sync::Arc::new(Queue::new(
            2,
            Duration::from_millis(20),
            Duration::from_millis(70),
        ));
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let queue = queue.clone();
            waiting.push(tokio::spawn(async move { queue.serve().await }));
        }
        let mut served = Vec::new();
        let mut timed_out = 0;
        for task in waiting {
            match task.await.unwrap() {
                Ok(latency) => served.push(latency),
                Err(_) => timed_out += 1,
            }
        }
        served.sort();
        // Two at a time for 20 ms each: 20, 20, 40, 40, 60, 60, 80, 80 ms; the last two would
        // start after waiting 80 ms, past the timeout.
        assert_eq!((served.len(), timed_out), (8, 2), "{served:?}");
        assert_eq!(queue.capacity(), 100.0);
        assert!(served[0] >= Duration::from_millis(20));
        assert!(
            served[served.len() - 1] >= Duration::from_millis(40),
            "{served:?}"
        );
    }
}

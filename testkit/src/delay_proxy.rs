//! A TCP proxy that holds back what the upstream sends by a delay the test changes at any
//! time: "Redis answers 200 ms late" for fault tests on a kernel without `netem`. Requests pass
//! at once; each reply chunk is released `delay` after it arrived, in order, so the effect on
//! the client is an added round-trip latency, as a slow path to Redis has.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

pub struct DelayProxy {
    pub addr: SocketAddr,
    delay_us: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks one) and forwards every connection to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let proxy = Self {
            addr: listener.local_addr()?,
            delay_us: Arc::new(AtomicU64::new(0)),
            stopped: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
        };
        let (delay_us, stopped, streams) = (
            proxy.delay_us.clone(),
            proxy.stopped.clone(),
            proxy.streams.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(1))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    streams.lock().unwrap().extend([a, b]);
                }
                pump(&client, &server, None);
                pump(&server, &client, Some(delay_us.clone()));
            }
        });
        Ok(proxy)
    }

    /// Replies are held back this long from now on (`Duration::ZERO`: passed at once).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`; with `delay`, each chunk is written that long after it was read.
fn pump(from: &TcpStream, to: &TcpStream, delay: Option<Arc<AtomicU64>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (send, receive) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read) = from.read(&mut buffer) {
            if read == 0 {
                break;
            }
            let held = delay
                .as_ref()
                .map_or(0, |delay| delay.load(Ordering::Relaxed));
            let due = Instant::now() + Duration::from_micros(held);
            if send.send((due, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in receive {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_held_back_by_the_delay_set() {
        let _one_at_a_time = crate::one_test_at_a_time();
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in echo.incoming().flatten() {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                std::thread::spawn(move || {
                    let _ = io::copy(&mut reader, &mut writer);
                });
            }
        });
        let proxy = DelayProxy::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap();
        let mut client = TcpStream::connect(proxy.addr).unwrap();
        let round_trip = |client: &mut TcpStream| {
            let started = Instant::now();
            client.write_all(b"ping").unwrap();
            let mut reply = [0; 4];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"ping");
            started.elapsed()
        };
        assert!(round_trip(&mut client) < Duration::from_millis(100));
        proxy.set_delay(Duration::from_millis(200));
        let slow = round_trip(&mut client);
        assert!(slow >= Duration::from_millis(200), "{slow:?}");
        proxy.set_delay(Duration::ZERO);
        assert!(round_trip(&mut client) < Duration::from_millis(100));
    }
}

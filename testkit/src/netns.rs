//! A small network of Linux network namespaces for fault tests: each member (Redis, each node)
//! gets a namespace and an address of its own on one bridge, the test process reaches them all
//! from the host, and faults are real packet-level ones (iptables on the bridge, which filters
//! bridged packets): the packets between two members dropped both ways (a partition, silent
//! to both), or a share of a member's packets lost. This
//! kernel has no `netem` qdisc (tried: "Specified qdisc kind is unknown"), so added latency is
//! [`crate::delay_proxy`]'s job.
//!
//! Needs root (`ip netns`, `iptables`). Everything a lab creates is named after this process, and
//! removed when the lab is dropped, also when a test fails (the drop runs while unwinding), and
//! a lab removes what labs of processes no longer running left behind.

use std::{
    io,
    net::Ipv4Addr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

const INSTALL: &str =
    "`apt-get install -y iproute2 iptables` (scripts/test does this), and run as root";

/// Names of this process's labs start with this and its pid.
const PREFIX: &str = "slab";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    tag: String,
    switch: String,
    members: Vec<String>,
    host_link: String,
    subnet: [u8; 3],
    /// The loss each member's packets meet now, in percent.
    losses: std::sync::Mutex<Vec<Option<u32>>>,
}

impl Lab {
    /// A lab of `members` namespaces on one bridge, the host on it too.
    pub fn new(members: usize) -> io::Result<Self> {
        assert!(members <= 200, "a lab has at most 200 members");
        remove_abandoned_labs();
        let pid = std::process::id();
        let lab = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}x{lab:x}", pid & 0xfffff);
        // 10.213.0.0/16 split by process and lab: two labs alive at once never share a subnet.
        let third = ((pid as u64 * 31 + lab as u64) % 250) as u8;
        let mut lab = Self {
            switch: format!("{PREFIX}-{pid}-{tag}-sw"),
            members: (0..members)
                .map(|index| format!("{PREFIX}-{pid}-{tag}-{index}"))
                .collect(),
            host_link: format!("sh{tag}"),
            subnet: [10, 213, third],
            losses: std::sync::Mutex::new(vec![None; members]),
            tag,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> io::Result<()> {
        ip(&["netns", "add", &self.switch])?;
        ip(&["-n", &self.switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &self.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &self.switch, "link", "set", "br0", "up"])?;
        // Bridged packets pass the switch namespace's iptables (where faults are set).
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.switch,
                "sysctl",
                "-qw",
                "net.bridge.bridge-nf-call-iptables=1",
            ],
        )?;
        for index in 0..self.members.len() {
            let namespace = self.members[index].clone();
            let inner = format!("m{}x{index}", self.tag);
            let outer = format!("b{}x{index}", self.tag);
            ip(&["netns", "add", &namespace])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &namespace])?;
            ip(&["link", "set", &outer, "netns", &self.switch])?;
            ip(&["-n", &namespace, "link", "set", &inner, "name", "eth0"])?;
            let address = format!("{}/24", self.address(index));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &self.switch, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &self.switch, "link", "set", &outer, "up"])?;
        }
        let bridge_side = format!("c{}", self.tag);
        ip(&[
            "link",
            "add",
            &self.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &bridge_side,
        ])?;
        ip(&["link", "set", &bridge_side, "netns", &self.switch])?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &bridge_side,
            "master",
            "br0",
        ])?;
        ip(&["-n", &self.switch, "link", "set", &bridge_side, "up"])?;
        let [a, b, c] = self.subnet;
        let host = format!("{a}.{b}.{c}.1/24");
        ip(&["addr", "add", &host, "dev", &self.host_link])?;
        ip(&["link", "set", &self.host_link, "up"])?;
        Ok(())
    }

    /// Member `index`'s address.
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, index as u8 + 2)
    }

    /// A command that runs `program` inside member `index`'s namespace.
    pub fn command(&self, index: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.members[index], program])
            .env_remove("RUST_BACKTRACE");
        command
    }

    /// Drops every packet between members `a` and `b`, both ways (`false` heals it): a
    /// partition as the network makes one, silent, nothing refused.
    pub fn partition(&self, a: usize, b: usize, cut: bool) -> io::Result<()> {
        let (a, b) = (self.address(a).to_string(), self.address(b).to_string());
        let action = if cut { "-A" } else { "-D" };
        self.on_bridge(action, &["FORWARD", "-s", &a, "-d", &b, "-j", "DROP"])?;
        self.on_bridge(action, &["FORWARD", "-s", &b, "-d", &a, "-j", "DROP"])
    }

    /// Drops the TCP packets between member `from` and one service, `address:port` (e.g. a
    /// proxy on the host), both ways, leaving the member's other traffic alone.
    pub fn cut_off(&self, from: usize, address: Ipv4Addr, port: u16, cut: bool) -> io::Result<()> {
        let member = self.address(from).to_string();
        let (address, port) = (address.to_string(), port.to_string());
        let action = if cut { "-A" } else { "-D" };
        let there = [
            "FORWARD", "-p", "tcp", "-s", &member, "-d", &address, "--dport", &port, "-j", "DROP",
        ];
        let back = [
            "FORWARD", "-p", "tcp", "-s", &address, "--sport", &port, "-d", &member, "-j", "DROP",
        ];
        self.on_bridge(action, &there)?;
        self.on_bridge(action, &back)
    }

    /// Cuts member `from` off from `address:port` and back every `period` (down, up, ...) until
    /// the returned guard is dropped, which stops it with the link up.
    pub fn flap(
        self: &Arc<Self>,
        from: usize,
        address: Ipv4Addr,
        port: u16,
        period: std::time::Duration,
    ) -> Flapping {
        let running = Arc::new(AtomicBool::new(true));
        let (lab, still) = (self.clone(), running.clone());
        let thread = std::thread::spawn(move || {
            let mut cut = false;
            while still.load(Ordering::Relaxed) {
                cut = !cut;
                if lab.cut_off(from, address, port, cut).is_err() {
                    return;
                }
                std::thread::sleep(period);
            }
            if cut {
                let _ = lab.cut_off(from, address, port, false);
            }
        });
        Flapping {
            running,
            thread: Some(thread),
        }
    }

    /// Drops `percent` of the packets member `index` sends, at random, replacing the share
    /// set before (`0` stops it).
    pub fn lose(&self, index: usize, percent: u32) -> io::Result<()> {
        let mut losses = self.losses.lock().unwrap();
        let rule = |percent: u32| {
            vec![
                "FORWARD".to_owned(),
                "-s".to_owned(),
                self.address(index).to_string(),
                "-m".to_owned(),
                "statistic".to_owned(),
                "--mode".to_owned(),
                "random".to_owned(),
                "--probability".to_owned(),
                format!("{:.4}", f64::from(percent) / 100.0),
                "-j".to_owned(),
                "DROP".to_owned(),
            ]
        };
        if let Some(before) = losses[index].take() {
            let rule = rule(before);
            self.on_bridge("-D", &rule.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        if percent > 0 {
            let rule = rule(percent);
            self.on_bridge("-A", &rule.iter().map(String::as_str).collect::<Vec<_>>())?;
            losses[index] = Some(percent);
        }
        Ok(())
    }

    /// Adds or removes a rule where every member's packets pass: the bridge (its namespace
    /// filters bridged packets with iptables), so a drop is silent to both ends.
    fn on_bridge(&self, action: &str, rule: &[&str]) -> io::Result<()> {
        let mut args = vec!["netns", "exec", &self.switch, "iptables", action];
        args.extend_from_slice(rule);
        run("ip", &args)
    }

    /// The host's address on the lab's bridge: members reach the test process there.
    pub fn host_address(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }
}

/// A flapping link ([`Lab::flap`]); dropping it stops the flapping and leaves the link up.
pub struct Flapping {
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flapping {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        for namespace in self.members.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", namespace]);
        }
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let output = crate::tools::output_of(Command::new(program).args(args), INSTALL)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Deletes the namespaces (and with them their links) of labs whose process has ended; the
/// host-side link goes with its peer in the switch namespace.
fn remove_abandoned_labs() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|pid| pid.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_reaches_its_members_and_leaves_nothing_behind() {
        let _one_at_a_time = crate::one_test_at_a_time();
        let lab = Lab::new(2).unwrap_or_else(|err| panic!("{err}"));
        let names: Vec<String> = lab.members.iter().chain([&lab.switch]).cloned().collect();
        // A TCP connection to a closed port: refused at once when packets pass, timed out when
        // they are dropped.
        let ping = |from: usize, to: usize| {
            let probe = format!(
                "import socket\ntry:\n socket.create_connection(('{}', 9), timeout=1)\nexcept ConnectionRefusedError:\n print('reached')\nexcept OSError:\n pass",
                lab.address(to)
            );
            let output = crate::tools::output(
                lab.command(from, "python3").args(["-c", &probe]),
                "`apt-get install -y python3`",
            );
            String::from_utf8_lossy(&output.stdout).contains("reached")
        };
        assert!(ping(0, 1), "members reach each other");
        lab.partition(0, 1, true).unwrap();
        assert!(!ping(0, 1), "a partition drops what 0 sends to 1");
        let from_host = std::net::TcpStream::connect_timeout(
            &(lab.address(0), 9).into(),
            std::time::Duration::from_secs(1),
        );
        assert_eq!(
            from_host.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused,
            "the host still reaches member 0"
        );
        lab.partition(0, 1, false).unwrap();
        assert!(ping(0, 1), "a healed partition passes again");
        lab.lose(0, 100).unwrap();
        assert!(!ping(0, 1), "all lost");
        lab.lose(0, 0).unwrap();
        assert!(ping(0, 1), "none lost");
        drop(lab);
        let left = String::from_utf8(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        for name in names {
            assert!(!left.contains(&name), "{name} was removed");
        }
    }
}

//! A chaos run's fault schedule, as `--fault AT+FOR:KIND=VALUE` writes it: `10s+5s:partition=2`
//! (node 2 cut off from Redis from 10 s to 15 s), `flap=2` (its link down and up every
//! 200 ms), `latency=200ms` (every Redis reply that much later), `loss=5` (Redis loses 5% of
//! the packets it sends). Times count from the start of the load.

use std::{fmt, str::FromStr, time::Duration};

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub lasts: Duration,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Node N (1-based) cannot reach Redis; nothing is refused, packets vanish.
    Partition { node: usize },
    /// Node N's link to Redis goes down and up every [`FLAP_PERIOD`].
    Flap { node: usize },
    /// Every Redis reply arrives this much later.
    Latency(Duration),
    /// Redis loses this share of the packets it sends, in percent.
    Loss(u32),
}

/// How long a flapping link stays down, then up.
pub const FLAP_PERIOD: Duration = Duration::from_millis(200);

const FORMAT: &str = "write a fault as AT+FOR:KIND=VALUE, e.g. 10s+5s:partition=2, \
                      20s+3s:latency=200ms, 30s+3s:loss=5 or 40s+5s:flap=1";

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (when, what) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: {FORMAT}"))?;
        let (at, lasts) = when
            .split_once('+')
            .ok_or_else(|| format!("`{when}` has no +FOR: {FORMAT}"))?;
        let at = sluice::config::parse_duration(at).map_err(|err| format!("`{at}`: {err}"))?;
        let lasts =
            sluice::config::parse_duration(lasts).map_err(|err| format!("`{lasts}`: {err}"))?;
        if lasts.is_zero() {
            return Err(format!("`{text}`: a fault lasts longer than 0 s"));
        }
        let (kind, value) = what
            .split_once('=')
            .ok_or_else(|| format!("`{what}` has no =VALUE: {FORMAT}"))?;
        let node = || -> Result<usize, String> {
            match value.parse::<usize>() {
                Ok(node) if node >= 1 => Ok(node),
                _ => Err(format!("`{value}` is not a node; nodes count from 1")),
            }
        };
        let kind = match kind {
            "partition" => FaultKind::Partition { node: node()? },
            "flap" => FaultKind::Flap { node: node()? },
            "latency" => FaultKind::Latency(
                sluice::config::parse_duration(value).map_err(|err| format!("`{value}`: {err}"))?,
            ),
            "loss" => match value.trim_end_matches('%').parse::<u32>() {
                Ok(percent) if (1..=100).contains(&percent) => FaultKind::Loss(percent),
                _ => return Err(format!("loss `{value}`: give a percentage from 1 to 100")),
            },
            other => {
                return Err(format!(
                    "unknown fault `{other}`: use partition, flap, latency or loss; {FORMAT}"
                ));
            }
        };
        Ok(Fault { at, lasts, kind })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Partition { node } => write!(f, "partition={node}"),
            FaultKind::Flap { node } => write!(f, "flap={node}"),
            FaultKind::Latency(delay) => write!(f, "latency={}ms", delay.as_millis()),
            FaultKind::Loss(percent) => write!(f, "loss={percent}%"),
        }
    }
}

impl Fault {
    pub fn ends(&self) -> Duration {
        self.at + self.lasts
    }
}

/// What is wrong with a schedule for `nodes` nodes and a load of `duration`, one line each.
pub fn problems(faults: &[Fault], nodes: usize, duration: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    for fault in faults {
        if let FaultKind::Partition { node } | FaultKind::Flap { node } = fault.kind
            && node > nodes
        {
            problems.push(format!(
                "--fault {}: there are {nodes} nodes (--nodes)",
                fault.kind
            ));
        }
        if fault.ends() > duration {
            problems.push(format!(
                "--fault {}: it ends at {:?}, after the load (--duration {:?})",
                fault.kind,
                fault.ends(),
                duration
            ));
        }
    }
    for (index, fault) in faults.iter().enumerate() {
        for other in &faults[index + 1..] {
            let same_target = std::mem::discriminant(&fault.kind)
                == std::mem::discriminant(&other.kind)
                && !matches!(
                    (&fault.kind, &other.kind),
                    (FaultKind::Partition { node: a }, FaultKind::Partition { node: b })
                        | (FaultKind::Flap { node: a }, FaultKind::Flap { node: b }) if a != b
                );
            let overlap = fault.at < other.ends() && other.at < fault.ends();
            if same_target && overlap {
                problems.push(format!(
                    "--fault {} and {} overlap on the same link; run them one after the other",
                    fault.kind, other.kind
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(text: &str) -> Fault {
        text.parse().unwrap()
    }

    #[test]
    fn each_kind_reads_and_prints_back() {
        assert_eq!(
            fault("10s+5s:partition=2"),
            Fault {
                at: Duration::from_secs(10),
                lasts: Duration::from_secs(5),
                kind: FaultKind::Partition { node: 2 }
            }
        );
        assert_eq!(
            fault("1s+500ms:latency=200ms").kind,
            FaultKind::Latency(Duration::from_millis(200))
        );
        assert_eq!(fault("0s+1s:loss=5%").kind, FaultKind::Loss(5));
        assert_eq!(fault("0s+1s:flap=1").kind.to_string(), "flap=1");
        assert_eq!(fault("0s+1s:loss=5").kind.to_string(), "loss=5%");
    }

    #[test]
    fn bad_faults_say_how_to_write_them() {
        for (text, says) in [
            ("10s:partition=2", "+FOR"),
            ("10s+5s", "AT+FOR:KIND=VALUE"),
            ("10s+5s:partition", "=VALUE"),
            ("10s+5s:partition=0", "nodes count from 1"),
            ("10s+0s:partition=1", "longer than 0 s"),
            ("10s+5s:loss=0", "from 1 to 100"),
            ("10s+5s:quake=1", "unknown fault `quake`"),
            ("ten+5s:loss=5", "`ten`"),
        ] {
            let error = text.parse::<Fault>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_schedule_fits_the_nodes_and_the_load_and_never_overlaps_on_one_link() {
        let ten = Duration::from_secs(10);
        assert!(problems(&[fault("1s+2s:partition=2")], 2, ten).is_empty());
        assert!(problems(&[fault("1s+2s:partition=3")], 2, ten)[0].contains("2 nodes"));
        assert!(problems(&[fault("9s+2s:loss=5")], 2, ten)[0].contains("after the load"));
        let overlapping = [fault("1s+2s:latency=20ms"), fault("2s+2s:latency=200ms")];
        assert!(problems(&overlapping, 2, ten)[0].contains("overlap"));
        let apart = [fault("1s+2s:partition=1"), fault("2s+2s:partition=2")];
        assert!(problems(&apart, 2, ten).is_empty());
    }
}

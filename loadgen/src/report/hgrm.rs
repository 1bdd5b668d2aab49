//! The `.hgrm` percentile table HdrHistogram tools print and plot (values in milliseconds).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The percentile distribution of `histogram` (microseconds) in HdrHistogram's text format.
pub fn write_hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for value in histogram.iter_quantiles(5) {
        let quantile = value.quantile_iterated_to();
        let inverse = if quantile < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - quantile))
        } else {
            format!("{:>14}", "inf")
        };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            histogram.highest_equivalent(value.value_iterated_to()) as f64 / 1e3,
            quantile,
            value.count_since_last_iteration(),
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1e3,
        histogram.stdev() / 1e3
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1e3,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values()
    );
    out
}

/// (percentile in [0, 1], value in ms) rows of an `.hgrm` table.
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let value = fields.next()?.parse().ok()?;
            let percentile = fields.next()?.parse().ok()?;
            Some((percentile, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_text_format() {
        let mut histogram = crate::stats::histogram();
        for us in 1..=10_000u64 {
            histogram.record(us).unwrap();
        }
        let text = write_hgrm(&histogram);
        assert!(text.contains("Total count    =        10000"), "{text}");
        let rows = parse_hgrm(&text);
        assert!(rows.len() > 20);
        let median = rows.iter().find(|(p, _)| *p >= 0.5).unwrap().1;
        assert!((median - 5.0).abs() < 0.05, "median {median} ms");
        assert_eq!(rows.last().unwrap().0, 1.0);
    }
}

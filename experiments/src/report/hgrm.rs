//! HdrHistogram's percentile-distribution text (`.hgrm`), the format wrk2 and HdrHistogram's
//! `outputPercentileDistribution` print, so that others' tools (HdrHistogram's plotter, for one)
//! read our histograms. Values are written in milliseconds; the histograms hold microseconds.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Percentile lines per halving of the distance to 100 %, as HdrHistogram's default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The percentile distribution of a histogram of microseconds, in milliseconds.
pub fn write(h: &Histogram<u64>) -> String {
    let scale = 1000.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    let _ = writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]");
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        // HdrHistogram's sub-bucket count: the power of two that holds 2 × 10^significant digits.
        (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
    );
    out
}

/// One line of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// The value, in the file's unit.
    pub value: f64,
    /// The quantile, 0 to 1.
    pub quantile: f64,
    /// Values at or below it.
    pub total_count: u64,
}

/// Reads back the lines of a percentile distribution (header and `#[` footer skipped).
pub fn read(text: &str) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut next = |what: &str| fields.next().ok_or_else(|| format!("line {}: no {what}", i + 1));
        let number = |s: &str, what: &str| {
            s.parse::<f64>()
                .map_err(|_| format!("line {}: {what} {s:?} is not a number", i + 1))
        };
        let value = number(next("value")?, "value")?;
        let quantile = number(next("percentile")?, "percentile")?;
        let total = next("total count")?;
        let total_count = total
            .parse()
            .map_err(|_| format!("line {}: total count {total:?} is not a count", i + 1))?;
        lines.push(Line {
            value,
            quantile,
            total_count,
        });
    }
    Ok(lines)
}

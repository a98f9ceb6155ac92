// A log-linear latency histogram, HdrHistogram style, small enough to read in one sitting.
//
// Why not keep every sample and sort? At 20 000 metrics/s per system that is 400 000 samples in 10 s,
// sorted again for every figure shown. A histogram records a sample in O(1) and answers a percentile
// in O(buckets), whatever the rate.
//
// Layout: values are microseconds. Below 128 µs each microsecond has its own bucket (exact). Above,
// every power of two [2^e, 2^(e+1)) is cut into 128 equal buckets, so a bucket is at most 1/128 of
// its value wide: a reported percentile is within 0.8 % of the true one (better than two significant
// digits, like HdrHistogram with 2). The top bucket range ends at 2^27 µs (134 s); larger values are
// counted in the last bucket and the exact maximum is kept beside.
"use strict";

const SUB = 128;            // buckets per power of two
const SUB_BITS = 7;         // log2(SUB)
const TOP_EXP = 27;         // 2^27 µs ≈ 134 s
const BUCKETS = SUB + (TOP_EXP - SUB_BITS) * SUB;

class LatencyHistogram {
  constructor() {
    this.counts = new Float64Array(BUCKETS);
    this.total = 0;
    this.max = -Infinity;  // exact, in ms
    this.min = Infinity;   // exact, in ms
  }

  static indexOf(us) {
    if (us < SUB) return us < 0 ? 0 : us | 0;
    const e = 31 - Math.clz32(us);              // floor(log2(us)), us < 2^31 here
    if (e >= TOP_EXP) return BUCKETS - 1;
    const sub = us >>> (e - SUB_BITS);          // in [SUB, 2*SUB)
    return SUB + (e - SUB_BITS) * SUB + (sub - SUB);
  }

  // The value a bucket stands for: its midpoint, in ms.
  static valueOf(index) {
    if (index < SUB) return (index + 0.5) / 1000;
    const e = SUB_BITS + Math.floor((index - SUB) / SUB);
    const sub = SUB + ((index - SUB) % SUB);
    const width = 2 ** (e - SUB_BITS);
    return (sub * width + width / 2) / 1000;
  }

  // Records a latency in ms. Negative values (a clock that stepped) are recorded as 0 and counted by
  // the caller; they are never silently dropped.
  record(ms) {
    const us = ms <= 0 ? 0 : Math.min(Math.round(ms * 1000), 2 ** 31 - 1);
    this.counts[LatencyHistogram.indexOf(us)] += 1;
    this.total += 1;
    if (ms > this.max) this.max = ms;
    if (ms < this.min) this.min = ms;
  }

  add(other) {
    const a = this.counts, b = other.counts;
    for (let i = 0; i < BUCKETS; i++) if (b[i] !== 0) a[i] += b[i];
    this.total += other.total;
    if (other.max > this.max) this.max = other.max;
    if (other.min < this.min) this.min = other.min;
  }

  clear() {
    this.counts.fill(0);
    this.total = 0;
    this.max = -Infinity;
    this.min = Infinity;
  }

  // The latencies at quantiles `qs` (ascending, each in [0, 1]) in one pass; null when empty.
  // q = 1 answers the exact maximum; any answer is clamped to [min, max], also exact.
  quantiles(qs) {
    const out = new Array(qs.length).fill(null);
    if (this.total === 0) return out;
    let seen = 0, j = 0;
    for (let i = 0; i < BUCKETS && j < qs.length; i++) {
      const c = this.counts[i];
      if (c === 0) continue;
      seen += c;
      while (j < qs.length && seen >= Math.max(1, Math.ceil(qs[j] * this.total))) {
        out[j] = qs[j] >= 1 ? this.max : Math.min(this.max, Math.max(this.min, LatencyHistogram.valueOf(i)));
        j++;
      }
    }
    for (; j < qs.length; j++) out[j] = this.max;
    return out;
  }

  summary() {
    const [p50, p99, p999] = this.quantiles([0.5, 0.99, 0.999]);
    return {p50, p99, p999, max: this.total ? this.max : null, count: this.total};
  }
}

if (typeof module !== "undefined") module.exports = {LatencyHistogram, BUCKETS};

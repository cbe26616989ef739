//! The numeric kernels, ported from Prometheus' promql/functions.go and
//! promql/quantile.go (2.42 behaviour unless noted).

use kube_insight_core::Sample;
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LSS, T_LTE, T_MOD, T_MUL, T_NEQ, T_POW, T_SUB,
};

/// Prometheus' extrapolatedRate for `rate`, `increase` and `delta`.
///
/// `may_reset` false skips the counter-reset scan (the caller knows the
/// series never decreases). `v2` selects Prometheus 2.x's order of the zero-point clamp and the
/// extrapolation threshold; 3.x applies the threshold first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extrapolated_rate(
    w: &[Sample],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    may_reset: bool,
    is_counter: bool,
    is_rate: bool,
    v2: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.value - first.value;
    if is_counter && may_reset {
        let mut prev = first.value;
        for s in &w[1..] {
            if s.value < prev {
                result += prev;
            }
            prev = s.value;
        }
    }
    let mut duration_to_start = (first.timestamp_ms - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last.timestamp_ms) as f64 / 1000.0;
    let sampled_interval = (last.timestamp_ms - first.timestamp_ms) as f64 / 1000.0;
    let avg_between = sampled_interval / (w.len() - 1) as f64;
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    if v2 {
        if is_counter && result > 0.0 && first.value >= 0.0 {
            let duration_to_zero = sampled_interval * (first.value / result);
            if duration_to_zero < duration_to_start {
                duration_to_start = duration_to_zero;
            }
        }
        if duration_to_start < threshold {
            extrapolate_to += duration_to_start;
        } else {
            extrapolate_to += avg_between / 2.0;
        }
        if duration_to_end < threshold {
            extrapolate_to += duration_to_end;
        } else {
            extrapolate_to += avg_between / 2.0;
        }
    } else {
        if duration_to_start >= threshold {
            duration_to_start = avg_between / 2.0;
        }
        if is_counter && result > 0.0 && first.value >= 0.0 {
            let duration_to_zero = sampled_interval * (first.value / result);
            if duration_to_zero < duration_to_start {
                duration_to_start = duration_to_zero;
            }
        }
        if duration_to_end >= threshold {
            duration_to_end = avg_between / 2.0;
        }
        extrapolate_to += duration_to_start + duration_to_end;
    }
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` (is_rate) and `idelta`.
pub(crate) fn instant_value(w: &[Sample], is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let last = w[w.len() - 1];
    let prev = w[w.len() - 2];
    let mut result = if is_rate && last.value < prev.value {
        last.value
    } else {
        last.value - prev.value
    };
    let interval = last.timestamp_ms - prev.timestamp_ms;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Prometheus' kahanSumInc (Neumaier's variant).
#[inline]
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `avg_over_time`: Kahan-compensated incremental mean with Prometheus'
/// infinity handling.
pub(crate) fn avg(w: &[Sample]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for s in w {
        count += 1.0;
        let v = s.value;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

/// `sum_over_time`: Kahan-compensated sum.
pub(crate) fn sum(w: &[Sample]) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for s in w {
        (sum, c) = kahan_inc(s.value, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

pub(crate) fn max(w: &[Sample]) -> f64 {
    let mut m = w[0].value;
    for s in w {
        if s.value > m || m.is_nan() {
            m = s.value;
        }
    }
    m
}

pub(crate) fn min(w: &[Sample]) -> f64 {
    let mut m = w[0].value;
    for s in w {
        if s.value < m || m.is_nan() {
            m = s.value;
        }
    }
    m
}

/// `stdvar_over_time`: Welford with Kahan-compensated accumulators.
pub(crate) fn stdvar(w: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for s in w {
        count += 1.0;
        let delta = s.value - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (s.value - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Go's math.Log2: exact for powers of two.
pub(crate) fn go_log2(x: f64) -> f64 {
    let (frac, exp) = frexp(x);
    if frac == 0.5 {
        return (exp - 1) as f64;
    }
    frac.ln() * (1.0 / std::f64::consts::LN_2) + exp as f64
}

/// Go's math.Log10.
pub(crate) fn go_log10(x: f64) -> f64 {
    x.ln() * (1.0 / std::f64::consts::LN_10)
}

/// Go's math.Frexp: x = frac × 2^exp with |frac| in [0.5, 1).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || x.is_nan() || x.is_infinite() {
        return (x, 0);
    }
    let (mut x, mut exp) = (x, 0i32);
    if x.abs() < f64::MIN_POSITIVE {
        x *= (1u64 << 52) as f64;
        exp = -52;
    }
    let bits = x.to_bits();
    exp += ((bits >> 52) & 0x7ff) as i32 - 1022;
    let bits = (bits & !(0x7ffu64 << 52)) | (1022u64 << 52);
    (f64::from_bits(bits), exp)
}

pub(crate) fn changes(w: &[Sample]) -> f64 {
    let mut n = 0;
    let mut prev = w[0].value;
    for s in &w[1..] {
        let cur = s.value;
        if cur != prev && !(cur.is_nan() && prev.is_nan()) {
            n += 1;
        }
        prev = cur;
    }
    n as f64
}

pub(crate) fn resets(w: &[Sample]) -> f64 {
    let mut n = 0;
    let mut prev = w[0].value;
    for s in &w[1..] {
        if s.value < prev {
            n += 1;
        }
        prev = s.value;
    }
    n as f64
}

/// Prometheus' `quantile` (used by `quantile` and `quantile_over_time`).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as vectorByValueHeap.Less does.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = 0f64.max(rank.floor());
    let upper = (n - 1.0).min(lower + 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Prometheus' bucketQuantile over (upper bound, cumulative count) pairs.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Coalesce buckets with the same upper bound.
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => out.push((ub, c)),
        }
    }
    // Ensure monotonicity.
    let mut max = f64::NEG_INFINITY;
    for b in out.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if out.len() < 2 {
        return f64::NAN;
    }
    let observations = out[out.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // sort.Search over the first len-1 buckets.
    let nb = out.len() - 1;
    let b = out[..nb].partition_point(|x| x.1 < rank);
    if b == nb {
        return out[nb - 1].0;
    }
    if b == 0 && out[0].0 <= 0.0 {
        return out[0].0;
    }
    let mut bucket_start = 0.0;
    let bucket_end = out[b].0;
    let mut count = out[b].1;
    if b > 0 {
        bucket_start = out[b - 1].0;
        count -= out[b - 1].1;
        rank -= out[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Go's strconv.ParseFloat for the forms label values use (`0.5`, `1e3`, `+Inf`, `NaN`).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.strip_prefix('+').unwrap_or(s);
    match t.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => {
            return Some(if s.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if s.is_empty() || s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Go's math.Max: NaN wins, +0 beats -0.
pub(crate) fn go_max(x: f64, y: f64) -> f64 {
    if x.is_infinite() && x > 0.0 || y.is_infinite() && y > 0.0 {
        return f64::INFINITY;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 && x == y {
        return if x.is_sign_negative() { y } else { x };
    }
    if x > y {
        x
    } else {
        y
    }
}

/// Go's math.Min: NaN wins, -0 beats +0.
pub(crate) fn go_min(x: f64, y: f64) -> f64 {
    if x.is_infinite() && x < 0.0 || y.is_infinite() && y < 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 && x == y {
        return if x.is_sign_negative() { x } else { y };
    }
    if x < y {
        x
    } else {
        y
    }
}

pub(crate) fn sgn(x: f64) -> f64 {
    if x < 0.0 {
        -1.0
    } else if x > 0.0 {
        1.0
    } else {
        x
    }
}

/// vectorElemBinop: (value, keep).
pub(crate) fn elem_binop(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_MOD => (l % r, true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// One step of Prometheus' topk/bottomk heap (Go's container/heap with
/// vectorByValueHeap / vectorByReverseValueHeap), so ties resolve the same way.
pub(crate) fn topk_push(h: &mut Vec<(f64, usize)>, item: (f64, usize), k: usize, top: bool) {
    let less = |h: &[(f64, usize)], i: usize, j: usize| -> bool {
        if h[i].0.is_nan() {
            return true;
        }
        if top {
            h[i].0 < h[j].0
        } else {
            h[i].0 > h[j].0
        }
    };
    if h.is_empty() {
        h.push(item);
        return;
    }
    let root = h[0].0;
    let better = if top { root < item.0 } else { root > item.0 };
    if h.len() < k || better || root.is_nan() {
        if h.len() == k {
            if k == 1 {
                h[0] = item;
                return;
            }
            // heap.Pop: swap the root to the end, sift down, drop it.
            let n = h.len() - 1;
            h.swap(0, n);
            let mut i = 0;
            loop {
                let j1 = 2 * i + 1;
                if j1 >= n {
                    break;
                }
                let mut j = j1;
                if j1 + 1 < n && less(h, j1 + 1, j1) {
                    j = j1 + 1;
                }
                if !less(h, j, i) {
                    break;
                }
                h.swap(i, j);
                i = j;
            }
            h.pop();
        }
        // heap.Push: append and sift up.
        h.push(item);
        let mut j = h.len() - 1;
        while j > 0 {
            let i = (j - 1) / 2;
            if !less(h, j, i) {
                break;
            }
            h.swap(i, j);
            j = i;
        }
    }
}

/// Prometheus' linearRegression: (slope per second, intercept at
/// `intercept_ms`), Kahan-compensated sums; a constant series has slope 0
/// (NaN when the constant is infinite).
pub(crate) fn linear_regression(w: &[Sample], intercept_ms: i64) -> (f64, f64) {
    let init_y = w[0].value;
    let mut const_y = true;
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0f64, 0.0, 0.0, 0.0);
    for (i, s) in w.iter().enumerate() {
        if const_y && i > 0 && s.value != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.timestamp_ms - intercept_ms) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(s.value, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * s.value, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    (slope, sum_y / n - slope * sum_x / n)
}

/// `holt_winters` (2.x) and `double_exponential_smoothing` (3.x): the
/// smoothed value after the last sample; `None` below two samples. The
/// factors are checked by the caller.
pub(crate) fn holt_winters(w: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0f64, w[0].value);
    let mut b = w[1].value - w[0].value;
    for (i, smp) in w.iter().enumerate().skip(1) {
        let x = sf * smp.value;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}

/// `mad_over_time`: the median of the absolute deviations from the median.
pub(crate) fn mad(w: &[Sample], buf: &mut Vec<f64>) -> f64 {
    buf.clear();
    buf.extend(w.iter().map(|s| s.value));
    let median = quantile(0.5, buf);
    buf.clear();
    buf.extend(w.iter().map(|s| (s.value - median).abs()));
    quantile(0.5, buf)
}

/// Go's `int64(x)` on amd64: truncation toward zero, and the "integer
/// indefinite" value (the minimum) for NaN and out-of-range values.
pub(crate) fn go_int64(x: f64) -> i64 {
    // 2^63 = 9223372036854775808.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if !(-TWO_63..TWO_63).contains(&x) {
        i64::MIN
    } else {
        x as i64
    }
}

/// The calendar fields of a Unix time in UTC, computed as Go's time
/// package does (including its wrap-around far outside ±292 billion years,
/// which is what `year(vector(NaN))` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GoDate {
    pub year: i64,
    /// 1..=12
    pub month: i64,
    /// 1..=31
    pub day: i64,
    /// 1..=366
    pub yday: i64,
    /// 0 = Sunday
    pub weekday: i64,
    pub hour: i64,
    pub minute: i64,
}

pub(crate) fn go_date(unix_sec: i64) -> GoDate {
    const SECS_PER_DAY: u64 = 86_400;
    const DAYS_PER_400Y: u64 = 365 * 400 + 97;
    const DAYS_PER_100Y: u64 = 365 * 100 + 24;
    const DAYS_PER_4Y: u64 = 365 * 4 + 1;
    const ABSOLUTE_ZERO_YEAR: i64 = -292_277_022_399;
    // unixToInternal + internalToAbsolute of Go's time package.
    const UNIX_TO_ABSOLUTE: i64 = 62_135_596_800 + 9_223_371_966_579_724_800;
    const DAYS_BEFORE: [i64; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
    let abs = unix_sec.wrapping_add(UNIX_TO_ABSOLUTE) as u64;
    let mut d = abs / SECS_PER_DAY;
    let mut n = d / DAYS_PER_400Y;
    let mut y = 400 * n;
    d -= DAYS_PER_400Y * n;
    n = d / DAYS_PER_100Y;
    n -= n >> 2;
    y += 100 * n;
    d -= DAYS_PER_100Y * n;
    n = d / DAYS_PER_4Y;
    y += 4 * n;
    d -= DAYS_PER_4Y * n;
    n = d / 365;
    n -= n >> 2;
    y += n;
    d -= 365 * n;
    let year = (y as i64).wrapping_add(ABSOLUTE_ZERO_YEAR);
    let yday = d as i64;
    let mut day = yday;
    let (month, day) = 'm: {
        if is_leap(year) {
            if day == 31 + 29 - 1 {
                break 'm (2, 29);
            }
            if day > 31 + 29 - 1 {
                day -= 1;
            }
        }
        let mut month = day / 31;
        let end = DAYS_BEFORE[(month + 1) as usize];
        let begin = if day >= end {
            month += 1;
            end
        } else {
            DAYS_BEFORE[month as usize]
        };
        (month + 1, day - begin + 1)
    };
    let weekday = ((abs.wrapping_add(SECS_PER_DAY)) % (7 * SECS_PER_DAY) / SECS_PER_DAY) as i64;
    GoDate {
        year,
        month,
        day,
        yday: yday + 1,
        weekday,
        hour: ((abs % SECS_PER_DAY) / 3600) as i64,
        minute: ((abs % 3600) / 60) as i64,
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in the month of a date (Prometheus: `32 - Date(y, m, 32).Day()`).
pub(crate) fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: `count_values`' label value.
pub(crate) fn format_float_f(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        crate::result::format_value(v)
    }
}

/// Where a series falls in the hash space, in [0, 1]: Prometheus 3's
/// `limit_ratio` sampler (xxhash64 of `name 0xff value 0xff …`).
pub(crate) fn sample_offset(l: &kube_insight_core::Labels) -> f64 {
    let mut b = Vec::with_capacity(256);
    for x in l.iter() {
        b.extend_from_slice(x.name.as_bytes());
        b.push(0xff);
        b.extend_from_slice(x.value.as_bytes());
        b.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&b, 0) as f64 / u64::MAX as f64
}

/// Natural order of two strings (runs of digits compare as numbers), as
/// the `natsort` package used by Prometheus 3's `sort_by_label`.
pub(crate) fn natural_less(a: &str, b: &str) -> bool {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        let (ca, cb) = (ab[i], bb[j]);
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            if na.len() != nb.len() {
                return na.len() < nb.len();
            }
            if na != nb {
                return na < nb;
            }
            continue;
        }
        if ca != cb {
            return ca < cb;
        }
        i += 1;
        j += 1;
    }
    ab.len() - i < bb.len() - j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample::new(t, v)
    }

    #[test]
    fn bucket_quantile_interpolates_and_handles_inf() {
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        assert!((bucket_quantile(0.5, &mut b) - 0.1).abs() < 1e-12);
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        assert!((bucket_quantile(0.75, &mut b) - 0.3).abs() < 1e-12);
        // Rank in +Inf bucket: the upper bound of the second-to-last bucket.
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 40.0)];
        assert_eq!(bucket_quantile(0.9, &mut b), 0.5);
        // No +Inf bucket: NaN.
        let mut b = vec![(0.1, 10.0), (0.5, 20.0)];
        assert!(bucket_quantile(0.5, &mut b).is_nan());
        // Non-monotonic counts are fixed up.
        let mut b = vec![(0.1, 10.0), (0.5, 8.0), (1.0, 20.0), (f64::INFINITY, 20.0)];
        let r = bucket_quantile(0.5, &mut b);
        assert!((r - 0.1).abs() < 1e-12, "{r}");
        assert_eq!(
            bucket_quantile(-1.0, &mut [(f64::INFINITY, 1.0)]),
            f64::NEG_INFINITY
        );
        assert_eq!(
            bucket_quantile(2.0, &mut [(f64::INFINITY, 1.0)]),
            f64::INFINITY
        );
        // Zero observations: NaN.
        let mut b = vec![(0.1, 0.0), (f64::INFINITY, 0.0)];
        assert!(bucket_quantile(0.5, &mut b).is_nan());
    }

    #[test]
    fn rate_extrapolates_to_window_edges() {
        // Samples every 15 s filling a 60 s window exactly at its edges.
        let w = [
            s(0, 0.0),
            s(15_000, 15.0),
            s(30_000, 30.0),
            s(45_000, 45.0),
            s(60_000, 60.0),
        ];
        let r = extrapolated_rate(&w, 0, 60_000, 60_000, true, true, true, true).unwrap();
        assert!((r - 1.0).abs() < 1e-12);
        // Counter starting at 100 with a gap to the window start: no zero clamp
        // (start 100 is far from zero), extrapolated by the gap.
        let w = [
            s(10_000, 100.0),
            s(25_000, 115.0),
            s(40_000, 130.0),
            s(55_000, 145.0),
        ];
        let inc = extrapolated_rate(&w, 0, 60_000, 60_000, true, true, false, true).unwrap();
        // sampled 45 s, +10 s to start (< 16.5 threshold), +5 s to end.
        assert!((inc - 45.0 * 60.0 / 45.0).abs() < 1e-9, "{inc}");
        // Zero-point clamp: counter starting at 1 extrapolates at most to zero.
        let w = [
            s(10_000, 1.0),
            s(25_000, 16.0),
            s(40_000, 31.0),
            s(55_000, 46.0),
        ];
        let inc = extrapolated_rate(&w, 0, 60_000, 60_000, true, true, false, true).unwrap();
        // duration to zero = 45 * 1/45 = 1 s.
        assert!(
            (inc - 45.0 * (45.0 + 1.0 + 5.0) / 45.0).abs() < 1e-9,
            "{inc}"
        );
        // Counter reset adds the value before the reset.
        let w = [
            s(0, 10.0),
            s(15_000, 20.0),
            s(30_000, 5.0),
            s(45_000, 15.0),
            s(60_000, 25.0),
        ];
        let inc = extrapolated_rate(&w, 0, 60_000, 60_000, true, true, false, true).unwrap();
        assert!((inc - 35.0).abs() < 1e-9, "{inc}");
        // delta is not a counter: no reset handling.
        let d = extrapolated_rate(&w, 0, 60_000, 60_000, false, false, false, true).unwrap();
        assert!((d - 15.0).abs() < 1e-9, "{d}");
        // Start gap (30 s) beyond 1.1× the average interval (16.5 s):
        // extrapolate only half an interval there; end gap (15 s) fully.
        let w = [s(30_000, 0.0), s(45_000, 15.0)];
        let inc = extrapolated_rate(&w, 0, 60_000, 60_000, false, false, false, true).unwrap();
        assert!(
            (inc - 15.0 * (15.0 + 7.5 + 15.0) / 15.0).abs() < 1e-9,
            "{inc}"
        );
        assert!(extrapolated_rate(&w[..1], 0, 60_000, 60_000, true, true, true, true).is_none());
    }

    #[test]
    fn irate_uses_last_two_samples_and_resets() {
        let w = [s(0, 1.0), s(10_000, 11.0), s(20_000, 31.0)];
        assert_eq!(instant_value(&w, true), Some(2.0));
        let w = [s(0, 50.0), s(10_000, 5.0)];
        assert_eq!(instant_value(&w, true), Some(0.5));
        assert_eq!(instant_value(&w, false), Some(-45.0));
    }

    #[test]
    fn go_min_max_semantics() {
        assert!(go_max(f64::NAN, 1.0).is_nan());
        assert!(go_min(1.0, f64::NAN).is_nan());
        assert_eq!(go_max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert!(go_max(-0.0, 0.0).is_sign_positive());
        assert!(go_min(-0.0, 0.0).is_sign_negative());
    }

    #[test]
    fn topk_heap_keeps_first_ties() {
        let mut h = Vec::new();
        for (i, v) in [1.0, 1.0, 1.0, 2.0].iter().enumerate() {
            topk_push(&mut h, (*v, i), 2, true);
        }
        let mut got: Vec<usize> = h.iter().map(|x| x.1).collect();
        got.sort();
        // 2.0 evicts the heap root (one of the 1.0 ties: index 0 after heap ops).
        assert_eq!(got.len(), 2);
        assert!(got.contains(&3));
    }

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(0.0, &mut v), 1.0);
        assert_eq!(quantile(1.0, &mut v), 4.0);
        assert_eq!(quantile(1.5, &mut v), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn go_dates() {
        // 2023-11-14T22:13:20Z, a Tuesday.
        let d = go_date(1_700_000_000);
        assert_eq!(
            (d.year, d.month, d.day, d.yday, d.weekday, d.hour, d.minute),
            (2023, 11, 14, 318, 2, 22, 13)
        );
        let d = go_date(951_782_400); // 2000-02-29
        assert_eq!((d.year, d.month, d.day, d.yday), (2000, 2, 29, 60));
        let d = go_date(-1); // 1969-12-31T23:59:59Z, a Wednesday.
        assert_eq!(
            (d.year, d.month, d.day, d.weekday, d.hour),
            (1969, 12, 31, 3, 23)
        );
        // What Prometheus 2.42 answers for year(vector(NaN)).
        assert_eq!(go_date(go_int64(f64::NAN)).year, 292_277_026_596);
        assert_eq!(go_date(go_int64(f64::NAN)).month, 12);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(go_int64(-0.5), 0);
    }

    #[test]
    fn regression_and_smoothing() {
        let w = [s(0, 1.0), s(10_000, 3.0), s(20_000, 5.0)];
        let (slope, icpt) = linear_regression(&w, 20_000);
        assert!((slope - 0.2).abs() < 1e-12 && (icpt - 5.0).abs() < 1e-12);
        assert_eq!(linear_regression(&w[..1], 0), (0.0, 1.0));
        assert_eq!(holt_winters(&w[..1], 0.5, 0.5), None);
        // Linear data is followed exactly.
        assert_eq!(holt_winters(&w, 0.5, 0.5), Some(5.0));
        let mut buf = Vec::new();
        assert_eq!(mad(&[s(0, 1.0), s(1, 2.0), s(2, 4.0)], &mut buf), 1.0);
        assert_eq!(format_float_f(1e21), "1000000000000000000000");
        assert!(natural_less("a2", "a10") && !natural_less("a10", "a2") && natural_less("a", "ab"));
    }
}

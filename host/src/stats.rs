//! Plain statistics over figures already collected, shared by the metrics
//! ([`crate::telemetry`]) and the operators' views of the store ([`crate::store`]); it names
//! neither, so both can use it.

/// `part` over `whole`, 0 when `whole` is 0: a failure rate.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The `p`th percentile (0 to 100) of `sorted` by nearest rank; the default (zero) when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

//! What the matmul examples share: timing a call, and their flags.

use std::time::Instant;

/// Seconds `f` takes: the median of `reps` calls after one to warm up.
pub fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The value after `flag` on the command line, or `default`.
pub fn flag(args: &[String], flag: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == flag)
        .map_or(default, |i| args[i + 1].parse().expect("a number"))
}

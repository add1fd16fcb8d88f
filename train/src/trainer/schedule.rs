//! Learning-rate schedules as plain functions of the step (nanoGPT's `get_lr`): linear warmup from
//! 0, then cosine or linear decay to `min_lr_ratio * lr` at `max_steps`, or constant.

pub use crate::recipe::Schedule;

/// The learning rate of optimizer step `step` (0-based) of `max_steps`.
pub fn lr_at(
    step: usize,
    max_steps: usize,
    warmup_steps: usize,
    lr: f64,
    min_lr_ratio: f64,
    schedule: Schedule,
) -> f64 {
    if step < warmup_steps {
        // (step + 1) so that the first step already moves; reaches lr at the end of warmup.
        return lr * (step + 1) as f64 / warmup_steps as f64;
    }
    let floor = lr * min_lr_ratio;
    let span = max_steps.saturating_sub(warmup_steps).max(1) as f64;
    let progress = ((step - warmup_steps) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => lr,
        Schedule::Linear => floor + (lr - floor) * (1.0 - progress),
        Schedule::Cosine => floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_to_the_floor() {
        let at = |s, sched| lr_at(s, 110, 10, 1.0, 0.1, sched);
        assert!((at(0, Schedule::Cosine) - 0.1).abs() < 1e-12);
        assert!((at(9, Schedule::Cosine) - 1.0).abs() < 1e-12);
        assert!((at(10, Schedule::Cosine) - 1.0).abs() < 1e-12);
        assert!(
            (at(60, Schedule::Cosine) - 0.55).abs() < 1e-12,
            "half way down the cosine"
        );
        assert!((at(60, Schedule::Linear) - 0.55).abs() < 1e-12);
        assert!((at(35, Schedule::Linear) - 0.775).abs() < 1e-12);
        assert!((at(110, Schedule::Cosine) - 0.1).abs() < 1e-12);
        assert!((at(500, Schedule::Linear) - 0.1).abs() < 1e-12);
        assert_eq!(at(80, Schedule::Constant), 1.0);
    }
}

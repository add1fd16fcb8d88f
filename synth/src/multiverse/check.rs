//! The content check of a converted trace: with tags, goals, conclusions and cue sentences removed
//! ([`Trace::sequential`]), the text must stay close to the original trace.
//!
//! As the reference's `data/distance.py`: Levenshtein distance over characters divided by the longer
//! length; a sample passes at or below the threshold (0.2 on the project site and in the June 2025
//! code, which we take as the default; later code defaults to 0.4).

use super::format::Trace;

/// The default largest normalised edit distance.
pub const DEFAULT_MAX_DISTANCE: f32 = 0.2;

/// Levenshtein distance between `a` and `b` over chars, divided by the longer length (0 for two
/// empty strings).
pub fn normalized_distance(a: &str, b: &str) -> f32 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 0.0;
    }
    // Two rows of the edit-distance table, over the shorter string.
    let (long, short) = if a.len() >= b.len() { (&a, &b) } else { (&b, &a) };
    let mut prev: Vec<usize> = (0..=short.len()).collect();
    let mut cur = vec![0; short.len() + 1];
    for (i, &x) in long.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &y) in short.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[short.len()] as f32 / longest as f32
}

/// The distance between a converted trace's sequential text and the original trace.
pub fn content_distance(trace: &Trace, original: &str) -> f32 {
    normalized_distance(&trace.sequential(), original.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_normalised_edit_counts() {
        assert_eq!(normalized_distance("", ""), 0.0);
        assert_eq!(normalized_distance("kitten", "sitting"), 3.0 / 7.0);
        assert_eq!(normalized_distance("abc", "abc"), 0.0);
        assert_eq!(normalized_distance("ab", ""), 1.0);
        assert_eq!(normalized_distance("naïve", "naive"), 0.2);
    }
}

//! Multiverse attention structure against a direct re-implementation of the reference's rules
//! (`train/utils.py` of Infini-AI-Lab/Multiverse, as described in ../shared/research/multiverse.md
//! §3) on random nested tag trees.

use firebrand_data::multiverse::reference::{mask as reference_mask, positions as reference_positions};
use firebrand_data::multiverse::{dense_mask, positions, segment};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random trace as tokens: tags, one-letter text atoms and (optionally) newline separators after
/// each `</Path>` and `</Goal>`.
fn random_trace(rng: &mut StdRng, separators: bool) -> Vec<String> {
    fn body(rng: &mut StdRng, depth: usize, seps: bool, out: &mut Vec<String>) {
        for _ in 0..rng.random_range(1..4) {
            if depth < 3 && rng.random_bool(0.4) {
                block(rng, depth, seps, out);
            } else {
                for _ in 0..rng.random_range(1..4) {
                    out.push("x".into());
                }
            }
        }
    }
    fn block(rng: &mut StdRng, depth: usize, seps: bool, out: &mut Vec<String>) {
        let paths = rng.random_range(1..4);
        out.push("<Parallel>".into());
        out.push("<Goal>".into());
        for _ in 0..paths {
            out.extend(["<Outline>", "o", "</Outline>"].map(String::from));
        }
        out.push("</Goal>".into());
        if seps {
            out.push("\n".into());
        }
        for _ in 0..paths {
            out.push("<Path>".into());
            body(rng, depth + 1, seps, out);
            out.push("</Path>".into());
            if seps {
                out.push("\n".into());
            }
        }
        out.extend(["<Conclusion>", "c", "</Conclusion>", "</Parallel>"].map(String::from));
    }
    let mut out = vec!["<Think>".to_string()];
    body(rng, 0, separators, &mut out);
    out.push("</Think>".into());
    out
}

/// Our structure for the same tokens: segments by byte offset, then mask and positions.
fn ours(tokens: &[String]) -> (Vec<Vec<bool>>, Vec<i32>) {
    let text: String = tokens.concat();
    let segs = segment(&text).unwrap();
    let mut offset = 0;
    let ids: Vec<u32> = tokens
        .iter()
        .map(|t| {
            let s = segs.at(offset);
            offset += t.len();
            s
        })
        .collect();
    let pos = positions(&ids, &segs.parents);
    let seg_i32: Vec<i32> = ids.iter().map(|&s| s as i32).collect();
    let parents: Vec<Vec<i32>> = segs
        .parents
        .iter()
        .map(|p| p.iter().map(|&x| x as i32).collect())
        .collect();
    (dense_mask(&seg_i32, &parents), pos)
}

#[test]
fn without_separators_mask_and_positions_equal_the_reference() {
    let mut rng = StdRng::seed_from_u64(6);
    for case in 0..300 {
        let tokens = random_trace(&mut rng, false);
        let (mask, pos) = ours(&tokens);
        assert_eq!(mask, reference_mask(&tokens, false), "case {case}: {}", tokens.concat());
        assert_eq!(pos, reference_positions(&tokens), "case {case}: {}", tokens.concat());
    }
}

#[test]
fn with_separators_only_the_references_sibling_leak_differs() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut leaks = 0;
    for case in 0..300 {
        let tokens = random_trace(&mut rng, true);
        let (mask, _) = ours(&tokens);
        assert_eq!(mask, reference_mask(&tokens, true), "case {case}: {}", tokens.concat());
        let reference = reference_mask(&tokens, false);
        for (q, row) in reference.iter().enumerate() {
            for (k, &allowed) in row.iter().enumerate() {
                if mask[q][k] != allowed {
                    // Only ever the reference letting a separator (which ours keeps in its path)
                    // see, or be seen by, a sibling path.
                    assert!(
                        allowed && (tokens[k] == "\n" || tokens[q] == "\n"),
                        "case {case}: q {q} k {k}"
                    );
                    leaks += 1;
                }
            }
        }
    }
    assert!(leaks > 0, "the random traces exercise the reference's leak");
}

//! Verification and identification metrics over similarity scores: ROC, exact tie-aware AUC,
//! TAR at a FAR, k-fold threshold accuracy, rank-k. Pure arithmetic on numbers; no images, no I/O.
//!
//! Convention everywhere: a pair is accepted as "same" iff `score >= threshold`; higher scores
//! mean more similar. Ties between scores are never broken by input order.

use crate::error::{Error, Result};
use std::cmp::Ordering;

/// One operating point of a ROC curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RocPoint {
    /// Accepting every pair with `score >= threshold` (+∞ for the first point, nothing accepted).
    pub threshold: f32,
    /// False accept rate: accepted impostors / impostors.
    pub far: f64,
    /// True accept rate: accepted genuine pairs / genuine pairs.
    pub tar: f64,
}

/// Checks that scores and labels line up, are finite and hold both classes; returns the
/// counts (genuine, impostor).
fn check_scores(scores: &[f32], same: &[bool]) -> Result<(usize, usize)> {
    if scores.len() != same.len() {
        return Err(Error::Shape(format!(
            "{} scores but {} labels",
            scores.len(),
            same.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "similarity score {i} is {} (the model produced non-finite embeddings)",
            scores[i]
        )));
    }
    let pos = same.iter().filter(|&&s| s).count();
    let neg = same.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::EmptyInput(format!(
            "verification needs genuine and impostor pairs, got {pos} genuine and {neg} impostor"
        )));
    }
    Ok((pos, neg))
}

/// Indices sorted by descending score.
fn order_desc(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal));
    idx
}

/// The ROC curve: one point per distinct score (ties move together, so a tie between a genuine
/// and an impostor score is a diagonal step), from (0, 0) at threshold +∞ to (1, 1).
pub fn roc_curve(scores: &[f32], same: &[bool]) -> Result<Vec<RocPoint>> {
    let (pos, neg) = check_scores(scores, same)?;
    let idx = order_desc(scores);
    let mut points = vec![RocPoint {
        threshold: f32::INFINITY,
        far: 0.0,
        tar: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            if same[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: t,
            far: fp as f64 / neg as f64,
            tar: tp as f64 / pos as f64,
        });
    }
    Ok(points)
}

/// Exact area under the ROC curve: the probability that a random genuine pair scores above a
/// random impostor pair, ties counting one half (Mann–Whitney U / (P·N)). Accumulated in
/// integers, so it is exact up to the final division.
pub fn auc(scores: &[f32], same: &[bool]) -> Result<f64> {
    let (pos, neg) = check_scores(scores, same)?;
    let idx = order_desc(scores);
    // twice_u = Σ over impostors of (2 · genuine strictly above + genuine tied).
    let (mut above, mut twice_u) = (0u128, 0u128);
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        let (mut p, mut n) = (0u128, 0u128);
        while i < idx.len() && scores[idx[i]] == t {
            if same[idx[i]] {
                p += 1;
            } else {
                n += 1;
            }
            i += 1;
        }
        twice_u += n * (2 * above + p);
        above += p;
    }
    Ok(twice_u as f64 / (2.0 * pos as f64 * neg as f64))
}

/// TAR at a FAR target: the best true accept rate over thresholds whose false accept rate is at
/// most `far`. Returns that operating point (threshold +∞ and TAR 0 if none accepts anything).
pub fn tar_at_far(scores: &[f32], same: &[bool], far: f64) -> Result<RocPoint> {
    if !(0.0..=1.0).contains(&far) {
        return Err(Error::InvalidArgument(format!(
            "FAR target {far} is not in 0..1"
        )));
    }
    let (_, neg) = check_scores(scores, same)?;
    // Compare counts, not rounded rates: allowed impostors = ⌊far · N⌋ (with slack for 1e-2 · 100
    // landing a hair under 1.0 in binary).
    let allowed = (far * neg as f64 + 1e-9).floor();
    let roc = roc_curve(scores, same)?;
    Ok(roc
        .into_iter()
        .take_while(|p| (p.far * neg as f64).round() <= allowed)
        .last()
        .unwrap_or(RocPoint {
            threshold: f32::INFINITY,
            far: 0.0,
            tar: 0.0,
        }))
}

/// Fraction of pairs classified correctly at `threshold`.
pub fn accuracy_at(scores: &[f32], same: &[bool], threshold: f32) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let right = scores
        .iter()
        .zip(same)
        .filter(|(&s, &y)| (s >= threshold) == y)
        .count();
    right as f64 / scores.len() as f64
}

/// The threshold of best accuracy on these pairs. Candidates are the midpoints between
/// consecutive distinct scores, plus one below the lowest (accept all) and one above the highest
/// (reject all), each offset by 1; among equally good candidates the lowest wins.
pub fn best_threshold(scores: &[f32], same: &[bool]) -> Result<f32> {
    if scores.len() != same.len() || scores.is_empty() {
        return Err(Error::EmptyInput(format!(
            "choosing a threshold needs scored pairs, got {} scores and {} labels",
            scores.len(),
            same.len()
        )));
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument(
            "a similarity score is not finite (the model produced non-finite embeddings)".into(),
        ));
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap_or(Ordering::Equal));
    // Sweep upwards. With the threshold below everything, all genuine pairs are right.
    let pos = same.iter().filter(|&&s| s).count();
    let mut right = pos as i64;
    let mut best = (right, scores[idx[0]] - 1.0);
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            // This pair moves from accepted to rejected.
            right += if same[idx[i]] { -1 } else { 1 };
            i += 1;
        }
        let cand = if i < idx.len() {
            0.5 * (t + scores[idx[i]])
        } else {
            t + 1.0
        };
        if right > best.0 {
            best = (right, cand);
        }
    }
    Ok(best.1)
}

/// Result of k-fold verification accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct KFoldAccuracy {
    /// Mean of the per-fold accuracies.
    pub mean: f64,
    /// Population standard deviation of the per-fold accuracies.
    pub std: f64,
    /// Accuracy on each held-out fold, in fold order.
    pub per_fold: Vec<f64>,
    /// The threshold chosen on the other folds for each held-out fold.
    pub thresholds: Vec<f32>,
}

/// k-fold verification accuracy: for each fold, the threshold of best accuracy on all the
/// *other* folds is applied to the held-out fold. `fold[i]` is pair i's fold, 0..k, k ≥ 2,
/// and every fold must hold at least one pair.
pub fn kfold_accuracy(scores: &[f32], same: &[bool], fold: &[usize]) -> Result<KFoldAccuracy> {
    if scores.len() != same.len() || scores.len() != fold.len() {
        return Err(Error::Shape(format!(
            "{} scores, {} labels and {} fold indices",
            scores.len(),
            same.len(),
            fold.len()
        )));
    }
    let k = fold.iter().max().map_or(0, |m| m + 1);
    if k < 2 {
        return Err(Error::InvalidArgument(format!(
            "k-fold accuracy needs at least 2 folds, got {k}"
        )));
    }
    let mut per_fold = Vec::with_capacity(k);
    let mut thresholds = Vec::with_capacity(k);
    for f in 0..k {
        let (mut tr_s, mut tr_y, mut te_s, mut te_y) = (vec![], vec![], vec![], vec![]);
        for i in 0..scores.len() {
            if fold[i] == f {
                te_s.push(scores[i]);
                te_y.push(same[i]);
            } else {
                tr_s.push(scores[i]);
                tr_y.push(same[i]);
            }
        }
        if te_s.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "fold {f} of {k} holds no pairs; give more pairs than folds"
            )));
        }
        let t = best_threshold(&tr_s, &tr_y)?;
        thresholds.push(t);
        per_fold.push(accuracy_at(&te_s, &te_y, t));
    }
    let mean = per_fold.iter().sum::<f64>() / k as f64;
    let std = (per_fold.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / k as f64).sqrt();
    Ok(KFoldAccuracy {
        mean,
        std,
        per_fold,
        thresholds,
    })
}

/// The rank of each probe's true identity: 1 + the number of *other* gallery entries scoring at
/// least as high as the true one. Ties count against the probe, so a model that maps every face
/// to the same point gets rank = gallery size, not a lucky rank 1.
///
/// `sims[p * g + j]` is the similarity of probe p to gallery entry j; `truth[p]` is the gallery
/// index of probe p's identity.
pub fn true_match_ranks(sims: &[f32], gallery: usize, truth: &[usize]) -> Result<Vec<usize>> {
    if gallery == 0 || sims.len() != truth.len() * gallery {
        return Err(Error::Shape(format!(
            "{} similarities for {} probes and {gallery} gallery entries",
            sims.len(),
            truth.len()
        )));
    }
    truth
        .iter()
        .enumerate()
        .map(|(p, &t)| {
            let row = &sims[p * gallery..(p + 1) * gallery];
            if t >= gallery {
                return Err(Error::InvalidArgument(format!(
                    "probe {p}'s identity {t} is not in the gallery of {gallery}"
                )));
            }
            if row.iter().any(|s| !s.is_finite()) {
                return Err(Error::InvalidArgument(
                    "a similarity score is not finite (the model produced non-finite embeddings)"
                        .into(),
                ));
            }
            let rivals = row
                .iter()
                .enumerate()
                .filter(|&(j, &s)| j != t && s >= row[t])
                .count();
            Ok(rivals + 1)
        })
        .collect()
}

/// Fraction of ranks at most `k` (the rank-k identification rate); 0 for no probes.
pub fn rank_k_rate(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Genuine 0.9, 0.5, 0.5; impostor 0.5, 0.3. Of the 6 (genuine, impostor) pairings,
    /// 4 are won and 2 tied: AUC = (4 + 2·½) / 6 = 5/6. Sorting ascending would give 1/6, and
    /// breaking the 0.5 tie by input order 4/6 or 6/6.
    #[test]
    fn auc_with_ties_is_exact() {
        let scores = [0.5, 0.9, 0.3, 0.5, 0.5];
        let same = [true, true, false, false, true];
        assert!((auc(&scores, &same).unwrap() - 5.0 / 6.0).abs() < 1e-15);
        // Reordering the inputs must not change it (the tie is not broken by position).
        let scores_r = [0.5, 0.5, 0.5, 0.3, 0.9];
        let same_r = [false, true, true, false, true];
        assert!((auc(&scores_r, &same_r).unwrap() - 5.0 / 6.0).abs() < 1e-15);
        // Perfect and inverted separation.
        assert_eq!(auc(&[0.9, 0.8, 0.1], &[true, true, false]).unwrap(), 1.0);
        assert_eq!(auc(&[0.1, 0.2, 0.9], &[true, true, false]).unwrap(), 0.0);
        // All tied: chance.
        assert_eq!(auc(&[0.4; 4], &[true, false, true, false]).unwrap(), 0.5);
    }

    #[test]
    fn auc_equals_trapezoid_area_of_the_roc() {
        let mut rng = crate::rng::Rng::new(5);
        let scores: Vec<f32> = (0..300).map(|_| (rng.below(20) as f32) / 20.0).collect();
        let same: Vec<bool> = (0..300)
            .map(|i| rng.uniform() < 0.3 + scores[i] * 0.4)
            .collect();
        let roc = roc_curve(&scores, &same).unwrap();
        let area: f64 = roc
            .windows(2)
            .map(|w| (w[1].far - w[0].far) * (w[1].tar + w[0].tar) / 2.0)
            .sum();
        assert!((area - auc(&scores, &same).unwrap()).abs() < 1e-12);
        assert_eq!(roc.first().map(|p| (p.far, p.tar)), Some((0.0, 0.0)));
        assert_eq!(roc.last().map(|p| (p.far, p.tar)), Some((1.0, 1.0)));
        assert!(roc.windows(2).all(|w| w[1].threshold < w[0].threshold));
    }

    /// Impostors 0.0, 0.1, …, 0.9; genuine 0.95, 0.9, 0.85, 0.5.
    /// Threshold 0.95: TAR ¼, FAR 0. Threshold 0.9 takes genuine 0.9 *and* impostor 0.9
    /// together (FAR 1/10). Threshold 0.85: TAR ¾, FAR 1/10. Threshold 0.8: FAR 2/10.
    #[test]
    fn tar_at_far_respects_ties_and_counts() {
        let mut scores: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
        let mut same = vec![false; 10];
        scores.extend([0.95, 0.9, 0.85, 0.5]);
        same.extend([true; 4]);
        let p = tar_at_far(&scores, &same, 0.1).unwrap();
        assert_eq!((p.tar, p.far, p.threshold), (0.75, 0.1, 0.85));
        // Below one impostor in ten: the tied genuine 0.9 cannot be taken without its impostor.
        let p = tar_at_far(&scores, &same, 0.05).unwrap();
        assert_eq!((p.tar, p.far, p.threshold), (0.25, 0.0, 0.95));
        let p = tar_at_far(&scores, &same, 0.2).unwrap();
        assert_eq!((p.tar, p.far), (0.75, 0.2));
        assert_eq!(tar_at_far(&scores, &same, 1.0).unwrap().tar, 1.0);
        // Nothing beats the top impostor: TAR 0 at FAR 0.
        let p = tar_at_far(&[0.9, 0.1], &[false, true], 0.0).unwrap();
        assert_eq!((p.tar, p.far), (0.0, 0.0));
        assert!(tar_at_far(&scores, &same, 1.5).is_err());
    }

    #[test]
    fn best_threshold_picks_the_lowest_best_midpoint() {
        // Sorted: 0.1F 0.4T 0.5F 0.6T. Candidates: 0.25 → 3/4, 0.45 → 2/4, 0.55 → 3/4.
        let t = best_threshold(&[0.6, 0.5, 0.4, 0.1], &[true, false, true, false]).unwrap();
        assert_eq!(t, 0.25);
        // Perfectly separable: the gap's midpoint.
        let t = best_threshold(&[0.9, 0.8, 0.3, 0.2], &[true, true, false, false]).unwrap();
        assert!((t - 0.55).abs() < 1e-6);
        // Only impostors: reject everything.
        let t = best_threshold(&[0.2, 0.7], &[false, false]).unwrap();
        assert!(t > 0.7);
        // Only genuine: accept everything.
        let t = best_threshold(&[0.2, 0.7], &[true, true]).unwrap();
        assert!(t <= 0.2);
    }

    /// Fold 0: (0.9 T) (0.8 T) (0.3 F) (0.2 F); fold 1: (0.6 T) (0.5 F) (0.4 T) (0.1 F).
    /// Held-out fold 0 uses fold 1's threshold 0.25 → 0.3 F is accepted → ¾.
    /// Held-out fold 1 uses fold 0's threshold 0.55 → 0.4 T is rejected → ¾.
    /// Choosing the threshold on the held-out fold itself would give 1.0 on fold 0.
    #[test]
    fn kfold_uses_the_other_folds_threshold() {
        let scores = [0.9, 0.6, 0.8, 0.5, 0.3, 0.4, 0.2, 0.1];
        let same = [true, true, true, false, false, true, false, false];
        let fold = [0, 1, 0, 1, 0, 1, 0, 1];
        let r = kfold_accuracy(&scores, &same, &fold).unwrap();
        assert_eq!(r.per_fold, vec![0.75, 0.75]);
        assert_eq!(r.thresholds[0], 0.25);
        assert!((r.thresholds[1] - 0.55).abs() < 1e-6);
        assert_eq!((r.mean, r.std), (0.75, 0.0));

        // Three folds, unequal accuracies: mean and std of the per-fold values.
        // Thresholds learnt: 0.425 for fold 0 (rejects its genuine 0.3), 0.2 for fold 1,
        // 0.225 for fold 2 (both separate their fold perfectly).
        let scores = [0.9, 0.3, 0.1, 0.8, 0.15, 0.7, 0.1];
        let same = [true, true, false, true, false, true, false];
        let fold = [0, 0, 0, 1, 1, 2, 2];
        let r = kfold_accuracy(&scores, &same, &fold).unwrap();
        assert_eq!(r.per_fold, vec![2.0 / 3.0, 1.0, 1.0]);
        // Mean (2/3 + 1 + 1) / 3 = 8/9; deviations −2/9, 1/9, 1/9.
        assert!((r.mean - 8.0 / 9.0).abs() < 1e-12);
        let want_std = (((2.0 / 9.0f64).powi(2) + 2.0 * (1.0 / 9.0f64).powi(2)) / 3.0).sqrt();
        assert!((r.std - want_std).abs() < 1e-12);

        assert!(kfold_accuracy(&scores, &same, &[0; 7]).is_err());
        assert!(kfold_accuracy(&scores, &same, &[0, 0, 0, 2, 2, 2, 2]).is_err());
    }

    #[test]
    fn ranks_count_ties_against_the_probe() {
        // 3 probes × 4 gallery entries.
        let sims = [
            0.9, 0.1, 0.2, 0.3, // truth 0: best → rank 1
            0.5, 0.4, 0.6, 0.7, // truth 1: three above → rank 4
            0.2, 0.8, 0.8, 0.1, // truth 2: tied with entry 1 → rank 2
        ];
        let ranks = true_match_ranks(&sims, 4, &[0, 1, 2]).unwrap();
        assert_eq!(ranks, vec![1, 4, 2]);
        assert_eq!(rank_k_rate(&ranks, 1), 1.0 / 3.0);
        assert_eq!(rank_k_rate(&ranks, 2), 2.0 / 3.0);
        assert_eq!(rank_k_rate(&ranks, 3), 2.0 / 3.0);
        assert_eq!(rank_k_rate(&ranks, 5), 1.0);
        // A collapsed model: everything tied → worst rank, not rank 1.
        let ranks = true_match_ranks(&[0.5; 6], 3, &[0, 2]).unwrap();
        assert_eq!(ranks, vec![3, 3]);
        assert!(true_match_ranks(&sims, 4, &[0, 1, 4]).is_err());
        assert!(true_match_ranks(&sims, 5, &[0, 1, 2]).is_err());
    }

    #[test]
    fn bad_scores_are_rejected() {
        assert!(auc(&[0.1, f32::NAN], &[true, false]).is_err());
        assert!(auc(&[0.1, 0.2], &[true, true]).is_err());
        assert!(roc_curve(&[0.1], &[true, false]).is_err());
        assert!(best_threshold(&[], &[]).is_err());
    }
}

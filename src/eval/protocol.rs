//! The evaluation protocols' bookkeeping: which image pairs are compared and in which fold, and
//! which images form the identification gallery. Works on indices and labels; embeds nothing.

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::collections::HashSet;

/// Folds of the verification protocol (as LFW).
pub const FOLDS: usize = 10;

/// Two images (indices into the evaluated image list) compared for verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexPair {
    pub a: usize,
    pub b: usize,
    pub same: bool,
    pub fold: usize,
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// Every genuine pair (i < j, same label) plus as many distinct random impostor pairs (seeded;
/// fewer only if fewer exist), dealt into `folds` folds by `assign_folds`.
pub fn generated_pairs(labels: &[usize], folds: usize, rng: &mut Rng) -> Result<Vec<IndexPair>> {
    let n_ids = labels.iter().max().map_or(0, |m| m + 1);
    let mut by_id = vec![Vec::new(); n_ids];
    for (i, &l) in labels.iter().enumerate() {
        by_id[l].push(i);
    }
    let mut genuine = Vec::new();
    for imgs in &by_id {
        for (x, &a) in imgs.iter().enumerate() {
            for &b in &imgs[x + 1..] {
                genuine.push((a, b));
            }
        }
    }
    if genuine.is_empty() {
        return Err(Error::EmptyInput(
            "no identity has two images, so there is no genuine pair to verify".into(),
        ));
    }
    let n = labels.len();
    let possible = (n * n - by_id.iter().map(|v| v.len() * v.len()).sum::<usize>()) / 2;
    if possible == 0 {
        return Err(Error::InvalidArgument(
            "all images belong to one identity, so there is no impostor pair; \
             evaluation needs at least 2 identities"
                .into(),
        ));
    }
    let want = genuine.len().min(possible);
    let impostor: Vec<(usize, usize)> = if 2 * want >= possible {
        // Dense case: enumerate them all and keep a random subset.
        let mut all = Vec::with_capacity(possible);
        for a in 0..n {
            for b in a + 1..n {
                if labels[a] != labels[b] {
                    all.push((a, b));
                }
            }
        }
        shuffle(&mut all, rng);
        all.truncate(want);
        all
    } else {
        // Sparse case: rejection sampling terminates quickly, at least half the draws are new.
        let mut seen = HashSet::with_capacity(want);
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let (a, b) = (rng.below(n), rng.below(n));
            if labels[a] == labels[b] {
                continue;
            }
            let key = (a.min(b), a.max(b));
            if seen.insert(key) {
                out.push(key);
            }
        }
        out
    };
    let same: Vec<bool> = genuine
        .iter()
        .map(|_| true)
        .chain(impostor.iter().map(|_| false))
        .collect();
    let fold = assign_folds(&same, folds, rng)?;
    Ok(genuine
        .into_iter()
        .chain(impostor)
        .zip(same.into_iter().zip(fold))
        .map(|((a, b), (same, fold))| IndexPair { a, b, same, fold })
        .collect())
}

/// Stratified random folds: the genuine pairs and the impostor pairs are each shuffled (seeded),
/// then the genuine list followed by the impostor list is dealt round-robin, so every fold gets
/// ⌊n/k⌋ or ⌈n/k⌉ pairs and a near-equal share of each class. Needs at least `k` pairs.
pub fn assign_folds(same: &[bool], k: usize, rng: &mut Rng) -> Result<Vec<usize>> {
    if k < 2 {
        return Err(Error::InvalidArgument(format!(
            "k-fold needs at least 2 folds, got {k}"
        )));
    }
    if same.len() < k {
        return Err(Error::InvalidArgument(format!(
            "{} pairs cannot fill {k} folds; use a set with more images per identity",
            same.len()
        )));
    }
    let mut pos: Vec<usize> = (0..same.len()).filter(|&i| same[i]).collect();
    let mut neg: Vec<usize> = (0..same.len()).filter(|&i| !same[i]).collect();
    shuffle(&mut pos, rng);
    shuffle(&mut neg, rng);
    let mut fold = vec![0; same.len()];
    for (j, i) in pos.into_iter().chain(neg).enumerate() {
        fold[i] = j % k;
    }
    Ok(fold)
}

/// The identification split: the gallery is the first image of each identity (images are in
/// name order), the probes are all the others. Returns (gallery, probes) as image indices;
/// `gallery[l]` is identity l's gallery image.
pub fn gallery_and_probes(labels: &[usize]) -> Result<(Vec<usize>, Vec<usize>)> {
    let n_ids = labels.iter().max().map_or(0, |m| m + 1);
    let mut gallery = vec![usize::MAX; n_ids];
    let mut probes = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        if gallery[l] == usize::MAX {
            gallery[l] = i;
        } else {
            probes.push(i);
        }
    }
    if gallery.contains(&usize::MAX) {
        return Err(Error::InvalidArgument(
            "identity labels are not contiguous from 0".into(),
        ));
    }
    if n_ids < 2 {
        return Err(Error::InvalidArgument(
            "identification needs at least 2 identities".into(),
        ));
    }
    if probes.is_empty() {
        return Err(Error::EmptyInput(
            "every identity has a single image, so there is no probe to identify".into(),
        ));
    }
    Ok((gallery, probes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pairs_are_all_genuine_plus_as_many_distinct_impostors() {
        // Identities with 3, 1 and 4 images: C(3,2) + C(4,2) = 9 genuine pairs.
        let labels = [0, 0, 0, 1, 2, 2, 2, 2];
        let pairs = generated_pairs(&labels, 3, &mut Rng::new(1)).unwrap();
        let genuine: Vec<_> = pairs.iter().filter(|p| p.same).collect();
        let impostor: Vec<_> = pairs.iter().filter(|p| !p.same).collect();
        assert_eq!(genuine.len(), 9);
        assert_eq!(impostor.len(), 9);
        for p in &pairs {
            assert_eq!(labels[p.a] == labels[p.b], p.same, "{p:?}");
            assert!(p.a < p.b);
            assert!(p.fold < 3);
        }
        let distinct: HashSet<_> = pairs.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(distinct.len(), 18);
        // Seeded: the same seed gives the same pairs, another seed other impostors.
        assert_eq!(
            pairs,
            generated_pairs(&labels, 3, &mut Rng::new(1)).unwrap()
        );
        assert_ne!(
            pairs,
            generated_pairs(&labels, 3, &mut Rng::new(2)).unwrap()
        );
    }

    #[test]
    fn impostors_are_capped_by_what_exists() {
        // 1 + 10 images: 45 genuine pairs but only 10 impostor pairs.
        let mut labels = vec![0];
        labels.extend([1; 10]);
        let pairs = generated_pairs(&labels, 10, &mut Rng::new(0)).unwrap();
        assert_eq!(pairs.iter().filter(|p| !p.same).count(), 10);
        assert!(generated_pairs(&[0, 1, 2], 2, &mut Rng::new(0)).is_err());
        assert!(generated_pairs(&[0, 0, 0], 2, &mut Rng::new(0)).is_err());
    }

    #[test]
    fn folds_are_stratified_and_balanced() {
        let same: Vec<bool> = (0..57).map(|i| i % 3 == 0).collect(); // 19 genuine, 38 impostor
        let fold = assign_folds(&same, 10, &mut Rng::new(4)).unwrap();
        for f in 0..10 {
            let n = fold.iter().filter(|&&x| x == f).count();
            let g = (0..57).filter(|&i| fold[i] == f && same[i]).count();
            assert!(n == 5 || n == 6, "fold {f} has {n} pairs");
            assert!(g == 1 || g == 2, "fold {f} has {g} genuine pairs");
        }
        assert!(assign_folds(&same[..9], 10, &mut Rng::new(0)).is_err());
        assert!(assign_folds(&same, 1, &mut Rng::new(0)).is_err());
    }

    #[test]
    fn gallery_is_the_first_image_of_each_identity() {
        let (g, p) = gallery_and_probes(&[0, 0, 1, 2, 2, 2]).unwrap();
        assert_eq!(g, vec![0, 2, 3]);
        assert_eq!(p, vec![1, 4, 5]);
        assert!(gallery_and_probes(&[0, 0, 0]).is_err());
        assert!(gallery_and_probes(&[0, 1, 2]).is_err());
        assert!(gallery_and_probes(&[0, 2, 2]).is_err());
    }
}

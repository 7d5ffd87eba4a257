//! Training objectives and their exact gradients: softmax cross-entropy, CosFace and ArcFace
//! margin softmax, cosine and L2 feature regression, relation (pairwise-similarity)
//! distillation and cross-model contrastive distillation. Generic over the float type so the gradient checks run in f64; each function
//! returns the loss and writes the gradient with respect to its first input. No tape here.

use crate::cpu::scalar::l2_normalize_backward;
use crate::error::{Error, Result};
use num_traits::Float;

fn cst<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

fn check_labels(labels: &[usize], n: usize, m: usize) -> Result<()> {
    if labels.len() != n {
        return Err(Error::Shape(format!(
            "{} labels for a batch of {n}",
            labels.len()
        )));
    }
    if let Some(l) = labels.iter().find(|&&l| l >= m) {
        return Err(Error::InvalidArgument(format!(
            "label {l} is out of range for {m} classes"
        )));
    }
    Ok(())
}

/// Mean softmax cross-entropy of `logits [n, m]` against `labels`; writes `dlogits`.
pub fn softmax_cross_entropy<T: Float>(
    logits: &[T],
    n: usize,
    m: usize,
    labels: &[usize],
    dlogits: &mut [T],
) -> Result<T> {
    check_labels(labels, n, m)?;
    if logits.len() != n * m || dlogits.len() != n * m {
        return Err(Error::Shape(format!(
            "logits have {} values, expected {n}×{m}",
            logits.len()
        )));
    }
    let inv_n = T::one() / cst(n as f64);
    let mut total = T::zero();
    for b in 0..n {
        let row = &logits[b * m..(b + 1) * m];
        let mx = row.iter().fold(T::neg_infinity(), |a, &v| a.max(v));
        let sum = row.iter().fold(T::zero(), |a, &v| a + (v - mx).exp());
        let lse = mx + sum.ln();
        total = total + lse - row[labels[b]];
        for (j, d) in dlogits[b * m..(b + 1) * m].iter_mut().enumerate() {
            let p = (row[j] - lse).exp();
            let onehot = if j == labels[b] { T::one() } else { T::zero() };
            *d = (p - onehot) * inv_n;
        }
    }
    Ok(total * inv_n)
}

/// Which margin a margin softmax applies to the target class's cosine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Margin {
    /// Plain normalised softmax: `s·cos θ` for every class.
    None,
    /// CosFace (additive cosine margin): target logit `s·(cos θ − m)`.
    CosFace(f64),
    /// ArcFace (additive angular margin): target logit `s·cos(θ + m)`, falling back to
    /// `s·(cos θ − m·sin m)` once `θ + m` passes π so the logit stays monotonic.
    ArcFace(f64),
}

/// Margin softmax over a cosine matrix `cos [n, m]` (embeddings and class centres both
/// L2-normalised), with scale `scale`; writes `dcos`. Returns (loss, how many rows' plain
/// cosines put the label first).
pub fn margin_softmax<T: Float>(
    cos: &[T],
    n: usize,
    m: usize,
    labels: &[usize],
    scale: f64,
    margin: Margin,
    dcos: &mut [T],
) -> Result<(T, usize)> {
    check_labels(labels, n, m)?;
    if cos.len() != n * m || dcos.len() != n * m {
        return Err(Error::Shape(format!(
            "cosines have {} values, expected {n}×{m}",
            cos.len()
        )));
    }
    let s: T = cst(scale);
    let mut logits: Vec<T> = cos.iter().map(|&c| c * s).collect();
    // d(target logit)/d(target cos), per row.
    let mut dtarget = vec![s; n];
    let mut correct = 0;
    for b in 0..n {
        let row = &cos[b * m..(b + 1) * m];
        let best = (0..m).fold(0, |bi, j| if row[j] > row[bi] { j } else { bi });
        correct += usize::from(best == labels[b]);
        let c = row[labels[b]];
        match margin {
            Margin::None => {}
            Margin::CosFace(mg) => logits[b * m + labels[b]] = s * (c - cst(mg)),
            Margin::ArcFace(mg) => {
                let (mg, one): (T, T) = (cst(mg), T::one());
                // Keep |c| < 1 so sin θ is never zero in the derivative.
                let c = c.max(-one + cst(1e-7)).min(one - cst(1e-7));
                let sin = (one - c * c).sqrt();
                let threshold = (T::from(std::f64::consts::PI).unwrap_or_else(T::nan) - mg).cos();
                if c > threshold {
                    logits[b * m + labels[b]] = s * (c * mg.cos() - sin * mg.sin());
                    dtarget[b] = s * (mg.cos() + c / sin * mg.sin());
                } else {
                    logits[b * m + labels[b]] = s * (c - mg * mg.sin());
                }
            }
        }
    }
    let mut dlogits = vec![T::zero(); n * m];
    let loss = softmax_cross_entropy(&logits, n, m, labels, &mut dlogits)?;
    for b in 0..n {
        for j in 0..m {
            let i = b * m + j;
            dcos[i] = dlogits[i] * if j == labels[b] { dtarget[b] } else { s };
        }
    }
    Ok((loss, correct))
}

fn check_pair(a: usize, b: usize, n: usize, d: usize) -> Result<()> {
    if a != n * d || b != n * d {
        return Err(Error::Shape(format!(
            "student and teacher features have {a} and {b} values, expected {n}×{d}"
        )));
    }
    Ok(())
}

/// Cosine feature regression: mean over rows of `1 − cos(student, teacher)`; writes the
/// gradient with respect to the student features. Zero rows count as cosine 0.
pub fn cosine_regression<T: Float>(
    student: &[T],
    teacher: &[T],
    n: usize,
    d: usize,
    dstudent: &mut [T],
) -> Result<T> {
    check_pair(student.len(), teacher.len(), n, d)?;
    let inv_n = T::one() / cst(n as f64);
    let mut total = T::zero();
    let tiny: T = cst(1e-12);
    for b in 0..n {
        let s = &student[b * d..(b + 1) * d];
        let t = &teacher[b * d..(b + 1) * d];
        let ns = s.iter().fold(T::zero(), |a, &v| a + v * v).sqrt();
        let nt = t.iter().fold(T::zero(), |a, &v| a + v * v).sqrt();
        let out = &mut dstudent[b * d..(b + 1) * d];
        if ns <= tiny || nt <= tiny {
            total = total + T::one();
            out.fill(T::zero());
            continue;
        }
        let dot = s.iter().zip(t).fold(T::zero(), |a, (&x, &y)| a + x * y);
        let c = dot / (ns * nt);
        total = total + T::one() - c;
        // dc/ds = t/(|s||t|) − c·s/|s|²
        for ((o, &x), &y) in out.iter_mut().zip(s).zip(t) {
            *o = -(y / (ns * nt) - c * x / (ns * ns)) * inv_n;
        }
    }
    Ok(total * inv_n)
}

/// L2 feature regression: mean over rows of `‖student − teacher‖²`.
pub fn l2_regression<T: Float>(
    student: &[T],
    teacher: &[T],
    n: usize,
    d: usize,
    dstudent: &mut [T],
) -> Result<T> {
    check_pair(student.len(), teacher.len(), n, d)?;
    let inv_n = T::one() / cst(n as f64);
    let two: T = cst(2.0);
    let mut total = T::zero();
    for ((o, &x), &y) in dstudent.iter_mut().zip(student).zip(teacher) {
        total = total + (x - y) * (x - y);
        *o = two * (x - y) * inv_n;
    }
    Ok(total * inv_n)
}

/// The rows of `x` (width `d`) scaled to unit length (a zero row stays zero).
fn unit_rows<T: Float>(x: &[T], d: usize) -> Vec<T> {
    let mut v = x.to_vec();
    for row in v.chunks_mut(d) {
        let norm = row.iter().fold(T::zero(), |a, &u| a + u * u).sqrt();
        let norm = norm.max(cst(1e-12));
        for u in row {
            *u = *u / norm;
        }
    }
    v
}

/// Relation distillation: the mean squared difference between the batch's pairwise cosine
/// matrices, `(1/n²) Σ_ij (ŝ_i·ŝ_j − t̂_i·t̂_j)²`, with ŝ, t̂ the L2-normalised rows.
pub fn relation_distillation<T: Float>(
    student: &[T],
    teacher: &[T],
    n: usize,
    d: usize,
    dstudent: &mut [T],
) -> Result<T> {
    check_pair(student.len(), teacher.len(), n, d)?;
    let (su, tu) = (unit_rows(student, d), unit_rows(teacher, d));
    let dot = |v: &[T], i: usize, j: usize| {
        (0..d).fold(T::zero(), |a, k| a + v[i * d + k] * v[j * d + k])
    };
    let inv_n2 = T::one() / cst((n * n) as f64);
    let four: T = cst(4.0);
    let mut total = T::zero();
    let mut dunit = vec![T::zero(); n * d];
    for i in 0..n {
        for j in 0..n {
            let diff = dot(&su, i, j) - dot(&tu, i, j);
            total = total + diff * diff;
            // The matrix is symmetric, so each ŝ_i receives 2·2·diff·ŝ_j.
            for k in 0..d {
                dunit[i * d + k] = dunit[i * d + k] + four * inv_n2 * diff * su[j * d + k];
            }
        }
    }
    l2_normalize_backward(n, d, student, &dunit, dstudent);
    Ok(total * inv_n2)
}

/// Contrastive distillation (InfoNCE across the two models): each student row must pick out its
/// own teacher row among the batch's teacher rows, `−(1/n) Σ_i log softmax_j(s·ŝ_i·t̂_j)[i]`,
/// with ŝ, t̂ the L2-normalised rows and `s` the scale. A row j ≠ i with the same label as i is
/// another view of the same person, so it is left out of row i's softmax rather than pushed
/// away. It penalises exactly what cross-model matching suffers from: a student feature that
/// lies nearer another face's teacher feature than its own.
pub fn contrastive_distillation<T: Float>(
    student: &[T],
    teacher: &[T],
    labels: &[usize],
    n: usize,
    d: usize,
    scale: f64,
    dstudent: &mut [T],
) -> Result<T> {
    check_pair(student.len(), teacher.len(), n, d)?;
    if labels.len() != n {
        return Err(Error::Shape(format!(
            "{} labels for a batch of {n}",
            labels.len()
        )));
    }
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "contrastive scale {scale} must be positive"
        )));
    }
    let (su, tu) = (unit_rows(student, d), unit_rows(teacher, d));
    let sc: T = cst(scale);
    let inv_n = T::one() / cst(n as f64);
    let mut total = T::zero();
    let mut dunit = vec![T::zero(); n * d];
    let mut z = vec![T::zero(); n];
    for i in 0..n {
        let si = &su[i * d..(i + 1) * d];
        let mut mx = T::neg_infinity();
        for j in 0..n {
            let keep = j == i || labels[j] != labels[i];
            z[j] = if keep {
                let tj = &tu[j * d..(j + 1) * d];
                sc * si.iter().zip(tj).fold(T::zero(), |a, (&x, &y)| a + x * y)
            } else {
                T::neg_infinity()
            };
            mx = mx.max(z[j]);
        }
        let sum = z.iter().fold(T::zero(), |a, &v| a + (v - mx).exp());
        let lse = mx + sum.ln();
        total = total + lse - z[i];
        for j in 0..n {
            if z[j] == T::neg_infinity() {
                continue;
            }
            let p = (z[j] - lse).exp();
            let g = (p - if j == i { T::one() } else { T::zero() }) * sc * inv_n;
            for k in 0..d {
                dunit[i * d + k] = dunit[i * d + k] + g * tu[j * d + k];
            }
        }
    }
    l2_normalize_backward(n, d, student, &dunit, dstudent);
    Ok(total * inv_n)
}

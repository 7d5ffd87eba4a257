//! The gallery's scale benchmark (BENCHMARKS.md, "Gallery"): synthetic 128-D face-like vectors
//! (identities of 10 noisy copies of a random unit centre), HNSW build time, bytes on disk,
//! resident memory of a memory-mapped view, query latency p50/p99 and recall@1 against exact
//! brute force in f32. It measures; it asserts nothing.
//!
//! cargo run --release --example gallery_scale -- build N DIR [--threads T]
//! cargo run --release --example gallery_scale -- query N DIR [--queries Q] [--ef E]
//!
//! The two phases run as two processes so that `query` measures the resident memory of a view
//! in a process that never held the index in memory.

use bridgeface::gallery::{Gallery, IndexSettings, ModelTag};
use bridgeface::rng::Rng;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::Instant;

const D: usize = 128;
/// Images per synthetic identity.
const PER_ID: usize = 10;
/// Noise per coordinate around an identity's unit centre: 0.09·√128 ≈ 1.0 in norm, so two
/// images of one identity have cosine ≈ 0.5, like real face embeddings of one person.
const SIGMA: f32 = 0.09;
const SEED: u64 = 2026;

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn centres(ids: usize) -> Vec<f32> {
    let mut r = Rng::new(SEED);
    let mut c: Vec<f32> = (0..ids * D).map(|_| r.normal()).collect();
    c.chunks_mut(D).for_each(normalise);
    c
}

/// Vector `i`'s noise is seeded by `i`, so any subset can be regenerated in any order.
fn sample(centres: &[f32], id: usize, seed: u64, out: &mut [f32]) {
    let mut r = Rng::new(seed);
    for (o, c) in out.iter_mut().zip(&centres[id * D..(id + 1) * D]) {
        *o = c + SIGMA * r.normal();
    }
    normalise(out);
}

fn gallery_vectors(centres: &[f32], n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n * D];
    for (i, row) in v.chunks_mut(D).enumerate() {
        sample(centres, i / PER_ID, SEED ^ (i as u64 + 1), row);
    }
    v
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(s) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} {per_sec} {elapsed_precise} eta {eta}",
    ) {
        pb.set_style(s.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn build(n: usize, dir: &Path, threads: usize) -> bridgeface::Result<()> {
    let c = centres(n.div_ceil(PER_ID));
    let v = gallery_vectors(&c, n);
    let mut g = Gallery::new(D, ModelTag::external(), IndexSettings::default())?;
    let pb = bar(n as u64, "add");
    let start = Instant::now();
    const CHUNK: usize = 10_000;
    for (k, rows) in v.chunks(CHUNK * D).enumerate() {
        let m = rows.len() / D;
        let labels: Vec<String> = (0..m)
            .map(|j| format!("id{}", (k * CHUNK + j) / PER_ID))
            .collect();
        let paths = vec![String::new(); m];
        g.add(rows, &labels, &paths, threads)?;
        pb.inc(m as u64);
    }
    pb.finish_and_clear();
    let build_s = start.elapsed().as_secs_f64();
    let t = Instant::now();
    g.save(dir)?;
    let save_s = t.elapsed().as_secs_f64();
    let [index, meta] = Gallery::files(dir);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "{}",
        serde_json::json!({
            "phase": "build", "vectors": n, "dimensions": D, "threads": threads,
            "settings": g.settings(), "build_s": build_s, "adds_per_sec": n as f64 / build_s,
            "save_s": save_s, "index_bytes": size(&index), "labels_bytes": size(&meta),
            "memory_usage_bytes": g.memory_usage(),
        })
    );
    Ok(())
}

fn query(n: usize, dir: &Path, queries: usize, ef: Option<usize>) -> bridgeface::Result<()> {
    let rss_start = rss_bytes();
    let t = Instant::now();
    let mut g = Gallery::view(dir)?;
    let view_s = t.elapsed().as_secs_f64();
    let rss_view = rss_bytes();
    if let Some(ef) = ef {
        g.set_expansion_search(ef)?;
    }
    let ids = n.div_ceil(PER_ID);
    let c = centres(ids);
    let mut r = Rng::new(SEED ^ 0xABCD);
    let mut q = vec![0f32; queries * D];
    for (j, row) in q.chunks_mut(D).enumerate() {
        sample(&c, r.below(ids), (1u64 << 40) + j as u64, row);
    }
    let rss_data = rss_bytes();
    let mut lat = Vec::with_capacity(queries);
    let mut approx = Vec::with_capacity(queries);
    let pb = bar(queries as u64, "search");
    for row in q.chunks(D) {
        let t = Instant::now();
        let m = g.search(row, 1)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        approx.push(m[0].key);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let rss_queried = rss_bytes();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    // Exact brute force in f32 over the regenerated originals, queries split over 2 threads.
    let v = gallery_vectors(&c, n);
    let t = Instant::now();
    let exact: Vec<u64> = std::thread::scope(|s| {
        let half = queries.div_ceil(2);
        let hs: Vec<_> = q
            .chunks(half * D)
            .map(|part| {
                let v = &v;
                s.spawn(move || {
                    part.chunks(D)
                        .map(|qr| {
                            let mut best = (f32::NEG_INFINITY, 0u64);
                            for (i, row) in v.chunks(D).enumerate() {
                                let dot: f32 = row.iter().zip(qr).map(|(a, b)| a * b).sum();
                                if dot > best.0 {
                                    best = (dot, i as u64);
                                }
                            }
                            best.1
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let exact_s = t.elapsed().as_secs_f64();
    let hits = approx.iter().zip(&exact).filter(|(a, e)| a == e).count();
    println!(
        "{}",
        serde_json::json!({
            "phase": "query", "vectors": n, "queries": queries,
            "expansion_search": ef.unwrap_or(g.settings().expansion_search),
            "view_s": view_s,
            "rss_before_view_bytes": rss_start, "rss_after_view_bytes": rss_view,
            "rss_after_queries_bytes": rss_queried,
            "rss_touched_by_queries_bytes": rss_queried.saturating_sub(rss_data),
            "latency_ms_p50": pct(0.5), "latency_ms_p99": pct(0.99),
            "latency_ms_mean": lat.iter().sum::<f64>() / lat.len() as f64,
            "recall_at_1": hits as f64 / queries as f64, "exact_search_s": exact_s,
        })
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gallery_scale build|query N DIR [--threads T] [--queries Q] [--ef E]";
    let (Some(phase), Some(n), Some(dir)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2),
    ) else {
        eprintln!("error: {usage}");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let r = match phase.as_str() {
        "build" => build(n, dir, flag(&args, "--threads", 2)),
        "query" => query(
            n,
            dir,
            flag(&args, "--queries", 1000),
            args.iter()
                .any(|a| a == "--ef")
                .then(|| flag(&args, "--ef", 128)),
        ),
        _ => {
            eprintln!("error: {usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

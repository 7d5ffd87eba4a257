//! Hostile input: decompression and size bombs are refused before any large allocation (each
//! case runs in a child process that reports how much its peak virtual memory grew), and every
//! input the fuzzers (fuzz/) found to break a parser is kept here as bytes with the clean error
//! it must now give.

use bridgeface::data::folder::parse_lfw_pairs;
use bridgeface::data::image::{decode_rgb8, MAX_IMAGE_SIDE};
use bridgeface::error::Error;
use bridgeface::onnx::import_bytes;
use bridgeface::weights::WeightFile;
use std::process::Command;

/// A bomb may grow the process's peak virtual memory by at most this much: the work done before
/// a refusal (reading a header) needs a few MiB, a bomb would need gigabytes.
const BOMB_VM_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// `VmPeak` of this process, in KiB. Virtual, not resident, so that even an allocation that
/// is never touched (zeroed memory from mmap) counts.
fn vm_peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmPeak in /proc/self/status")
}

/// Runs `case` in a child copy of this test binary (alone, so no other test's memory counts),
/// where it must succeed, and returns how much its peak virtual memory grew, in KiB.
fn child_vm_growth_kib(name: &str, case: impl FnOnce()) -> u64 {
    const MARK: &str = "vm-peak-growth-kib=";
    if std::env::var("BRIDGE_BOMB_CHILD").as_deref() == Ok(name) {
        let before = vm_peak_kib();
        case();
        println!("{MARK}{}", vm_peak_kib() - before);
        return 0;
    }
    let out = Command::new(std::env::current_exe().expect("test binary path"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("BRIDGE_BOMB_CHILD", name)
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child `{name}` failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split(MARK)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("child `{name}` printed no measurement:\n{stdout}"))
}

/// Asserts that `case` (run in a child) grows peak virtual memory by less than the bomb limit.
fn in_child(name: &str, case: impl FnOnce()) {
    let growth = child_vm_growth_kib(name, case);
    assert!(
        growth < BOMB_VM_GROWTH_LIMIT_KIB,
        "`{name}` grew peak virtual memory by {growth} KiB (limit {BOMB_VM_GROWTH_LIMIT_KIB})"
    );
}

#[test]
fn the_memory_check_sees_a_large_allocation_even_if_untouched() {
    // The control for the bomb tests: 256 MiB of zeroes (lazily mapped, never touched) must
    // register, or a passing bomb test would prove nothing.
    let name = "the_memory_check_sees_a_large_allocation_even_if_untouched";
    let growth = child_vm_growth_kib(name, || {
        let v = vec![0u8; 256 << 20];
        assert_eq!(std::hint::black_box(&v).len(), 256 << 20);
    });
    // The peak before the case already holds some slack (glibc reserves 64 MiB arenas), so
    // the growth is less than the allocation, but it must clear the bomb limit by far.
    if std::env::var("BRIDGE_BOMB_CHILD").is_err() {
        assert!(
            growth > 2 * BOMB_VM_GROWTH_LIMIT_KIB,
            "a 256 MiB allocation grew VmPeak by only {growth} KiB"
        );
    }
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A PNG whose header claims `w × h` pixels of `colour` type at `depth` bits, with a small
/// zlib stream of zero rows as its data (a real bomb's data would inflate to the full size).
fn png_claiming(w: u32, h: u32, depth: u8, colour: u8) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 1 << 20]).expect("deflate");
    png_chunk(&mut png, b"IDAT", &z.finish().expect("deflate"));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn assert_image_limit(e: Error) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Image { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{MAX_IMAGE_SIDE} px a side")) && msg.contains("downscale"),
        "the error should state the limit and what to do: {msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn png_claiming_100000_by_100000_pixels_is_refused_before_allocating() {
    in_child(
        "png_claiming_100000_by_100000_pixels_is_refused_before_allocating",
        || {
            let e = decode_rgb8("bomb.png", &png_claiming(100_000, 100_000, 8, 2))
                .expect_err("a 100,000² PNG must be refused");
            assert_image_limit(e);
        },
    );
}

#[test]
fn png_within_the_side_limit_but_over_the_memory_limit_is_refused() {
    // 16,000 × 16,000 RGBA at 16 bits is 2 GiB decoded: each side is allowed, the size is not.
    in_child(
        "png_within_the_side_limit_but_over_the_memory_limit_is_refused",
        || {
            let e = decode_rgb8("bomb.png", &png_claiming(16_000, 16_000, 16, 6))
                .expect_err("a 2 GiB PNG must be refused");
            assert_image_limit(e);
        },
    );
}

#[test]
fn jpeg_claiming_65535_by_65535_pixels_is_refused_before_allocating() {
    // JPEG's largest expressible size. A real 8×8 JPEG with its SOF0 size fields patched.
    in_child(
        "jpeg_claiming_65535_by_65535_pixels_is_refused_before_allocating",
        || {
            let mut jpg = Vec::new();
            image::RgbImage::from_pixel(8, 8, image::Rgb([90, 120, 200]))
                .write_to(
                    &mut std::io::Cursor::new(&mut jpg),
                    image::ImageFormat::Jpeg,
                )
                .expect("encode a JPEG");
            let sof = jpg
                .windows(2)
                .position(|m| m == [0xFF, 0xC0])
                .expect("a baseline SOF0 marker");
            // FF C0, length (2), precision (1), height (2), width (2).
            jpg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
            let e = decode_rgb8("bomb.jpg", &jpg).expect_err("a 65,535² JPEG must be refused");
            assert_image_limit(e);
        },
    );
}

#[test]
fn the_cli_refuses_an_image_bomb_with_one_line_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("bridgeface-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let bomb = dir.join("bomb.png");
    std::fs::write(&bomb, png_claiming(100_000, 100_000, 8, 2)).expect("write bomb");
    let weights = dir.join("w.safetensors");
    let init = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["init", "--resolution", "8", "--out"])
        .arg(&weights)
        .output()
        .expect("run bridge init");
    assert!(init.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .arg("embed")
        .arg(&bomb)
        .arg("--weights")
        .arg(&weights)
        .output()
        .expect("run bridge embed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1,
        "{stderr}"
    );
    assert!(stderr.contains("16384 px a side"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn safetensors_with_header_len(len: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

fn assert_weight_format(e: Error, needle: &str) {
    let msg = e.to_string();
    assert!(matches!(e, Error::WeightFormat { .. }), "{msg}");
    assert!(msg.contains(needle), "{msg:?} should say {needle:?}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn safetensors_header_claiming_a_huge_length_is_refused() {
    in_child(
        "safetensors_header_claiming_a_huge_length_is_refused",
        || {
            for len in [u64::MAX, 1 << 62, 1 << 40, 200_000_000] {
                let e = WeightFile::from_bytes(
                    "huge.safetensors",
                    safetensors_with_header_len(len, b"{}"),
                )
                .map(|_| ())
                .expect_err("a huge header length must be refused");
                assert_weight_format(e, "100 MB limit");
            }
            // Under the limit but past the end of the file.
            let e = WeightFile::from_bytes(
                "short.safetensors",
                safetensors_with_header_len(50_000_000, b"{}"),
            )
            .map(|_| ())
            .expect_err("a header past the end must be refused");
            assert_weight_format(e, "runs past the end");
        },
    );
}

#[test]
fn safetensors_file_claiming_a_huge_header_is_refused_from_disk_too() {
    let dir = std::env::temp_dir().join(format!("bridgeface-hostile-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let p = dir.join("huge.safetensors");
    std::fs::write(&p, safetensors_with_header_len(1 << 62, b"{}")).expect("write");
    let e = WeightFile::open(&p).map(|_| ()).expect_err("refused");
    assert_weight_format(e, "100 MB limit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn safetensors_shape_whose_element_count_overflows_is_refused() {
    let header =
        br#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    let e = WeightFile::from_bytes("overflow.safetensors", v)
        .map(|_| ())
        .expect_err("refused");
    assert_weight_format(e, "overflows");
}

/// ONNX bytes of a model whose only initializer has `dims` and no data.
fn onnx_with_initializer_dims(dims: &[i64]) -> Vec<u8> {
    use bridgeface::onnx::proto::*;
    use prost::Message;
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            initializer: vec![TensorProto {
                name: "w".into(),
                dims: dims.to_vec(),
                data_type: data_type::FLOAT,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn onnx_tensor_whose_dims_overflow_is_refused() {
    in_child("onnx_tensor_whose_dims_overflow_is_refused", || {
        let e = import_bytes(&onnx_with_initializer_dims(&[1 << 32, 1 << 32, 2]))
            .expect_err("overflowing dims must be refused");
        let msg = e.to_string();
        assert!(matches!(e, Error::Onnx(_)), "{msg}");
        assert!(msg.contains("element count overflows"), "{msg}");
        // Huge but countable dims with no data: refused by the count check, nothing allocated.
        let e = import_bytes(&onnx_with_initializer_dims(&[1 << 20, 1 << 20, 1 << 20]))
            .expect_err("dims with no data must be refused");
        assert!(e.to_string().contains("has 0 values"), "{e}");
    });
}

#[test]
fn pairs_header_too_large_to_count_is_refused() {
    let e = parse_lfw_pairs(
        "18446744073709551615 18446744073709551615\nA 1 2\n",
        "pairs.txt",
        "/data",
    )
    .expect_err("refused");
    assert!(e.to_string().contains("more than can be counted"), "{e}");
}

#[test]
fn pairs_names_cannot_leave_the_root() {
    for line in ["../etc 1 2", "a/b 1 2", "A 1 .. 2", ". 1 2"] {
        let e = parse_lfw_pairs(&format!("1 1\n{line}\nA 1 B 2\n"), "pairs.txt", "/data")
            .expect_err("refused");
        assert!(
            e.to_string().contains("not a plain folder name"),
            "{line}: {e}"
        );
    }
}

/// YuNet's 12 outputs, all zero but for cell 0 of stride 8: 16 values (cls, obj, box, kps).
fn yunet_outputs_with(cell0: [f32; 16]) -> Vec<bridgeface::tensor::Tensor> {
    use bridgeface::model::detector::{DETECTOR_SIDE, STRIDES};
    let widths = [1usize, 1, 4, 10];
    let mut outs = Vec::new();
    let mut at = 0;
    for w in widths {
        for (si, s) in STRIDES.iter().enumerate() {
            let cells = (DETECTOR_SIDE / s) * (DETECTOR_SIDE / s);
            let mut v = vec![0.0f32; cells * w];
            if si == 0 {
                v[..w].copy_from_slice(&cell0[at..at + w]);
            }
            outs.push(bridgeface::tensor::Tensor::new(&[v.len()], v).expect("tensor"));
        }
        at += w;
    }
    outs
}

#[test]
fn yunet_decode_drops_nan_scores_and_non_finite_boxes() {
    use bridgeface::model::detector::decode;
    let good = [
        0.9, 0.9, 0.5, 0.5, 1.0, 1.0, 0.1, 0.1, 0.9, 0.1, 0.5, 0.5, 0.2, 0.9, 0.8, 0.9,
    ];
    assert_eq!(
        decode(&yunet_outputs_with(good), 0.5)
            .expect("decode")
            .len(),
        1
    );
    // Found by the `image` fuzz target's checks: a NaN class score passed `score < threshold`.
    let mut nan_score = good;
    nan_score[0] = f32::NAN;
    assert!(decode(&yunet_outputs_with(nan_score), 0.5)
        .expect("decode")
        .is_empty());
    // A box size of exp(100) is infinite; a NaN landmark locates nothing.
    for (i, v) in [(4, 100.0), (7, f32::NAN), (15, f32::INFINITY)] {
        let mut bad = good;
        bad[i] = v;
        assert!(
            decode(&yunet_outputs_with(bad), 0.5)
                .expect("decode")
                .is_empty(),
            "value {v} at {i} should drop the detection"
        );
    }
}

#[test]
fn alignment_refuses_non_finite_landmarks() {
    use bridgeface::data::align::align_face;
    use bridgeface::data::image::Rgb8;
    let img = Rgb8 {
        width: 40,
        height: 40,
        pixels: vec![128; 40 * 40 * 3],
    };
    let mut lm = [
        [12.0, 15.0],
        [28.0, 15.0],
        [20.0, 22.0],
        [14.0, 30.0],
        [26.0, 30.0],
    ];
    assert!(align_face(&img, &lm, 16).is_ok());
    for v in [f64::NAN, f64::INFINITY, f64::MAX] {
        lm[2][1] = v;
        let e = align_face(&img, &lm, 16).expect_err("non-finite landmarks");
        assert!(e.to_string().contains("finite"), "{v}: {e}");
    }
}

#[test]
fn checkpoint_optimiser_buffers_must_match_their_parameters() {
    use bridgeface::tensor::Tensor;
    use bridgeface::train::{checkpoint, TrainConfig, TrainState};
    use bridgeface::weights::{self, StoreDtype};
    let dir = std::env::temp_dir().join(format!("bridgeface-hostile-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let cfg = TrainConfig::new(8);
    let mut state = TrainState::new(&cfg, 3).expect("state");
    let grads: Vec<Vec<f32>> = state
        .params
        .tensors
        .values()
        .map(|t| vec![1e-3; t.numel()])
        .collect();
    {
        let mut slots: Vec<(&str, &mut [f32], &[f32], bool)> = state
            .params
            .tensors
            .iter_mut()
            .zip(&grads)
            .map(|((n, t), g)| (n.as_str(), t.data_mut(), g.as_slice(), true))
            .collect();
        state.optim.step(&mut slots, 0.1).expect("step");
    }
    let good = dir.join("good.ckpt");
    checkpoint::save(&good, &cfg, &state).expect("save");
    checkpoint::load(&good, &cfg).expect("a checkpoint as written loads");
    // Rewrite it with one buffer changed, keeping everything else.
    type Edit<'a> = &'a dyn Fn(&str, Tensor) -> Option<(String, Tensor)>;
    let rewrite = |name: &str, edit: Edit| {
        let w = WeightFile::open(&good).expect("open");
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for e in w.entries() {
            let t = w.tensor(&e.name, &e.shape).expect("tensor");
            if let Some(x) = edit(&e.name, t) {
                named.push(x);
            }
        }
        let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
        let p = dir.join(name);
        weights::save(&p, &refs, w.metadata(), StoreDtype::F32).expect("save");
        checkpoint::load(&p, &cfg)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    };
    let buf = "optim.m.stem.conv.weight";
    let short = rewrite("short.ckpt", &|n, t| {
        let t = if n == buf {
            Tensor::new(&[5], t.data()[..5].to_vec()).expect("short")
        } else {
            t
        };
        Some((n.to_string(), t))
    });
    assert!(short.contains(buf) && short.contains("[5]"), "{short}");
    let stray = rewrite("stray.ckpt", &|n, t| {
        Some((n.replace(buf, "optim.m.no.such.param"), t))
    });
    assert!(stray.contains("names no parameter"), "{stray}");
    let adam = rewrite("adam.ckpt", &|n, t| {
        Some((n.replace(buf, "optim.v.stem.conv.weight"), t))
    });
    assert!(
        adam.contains("not one this run's optimiser keeps"),
        "{adam}"
    );
    let nan = rewrite("nan.ckpt", &|n, t| {
        let mut t = t;
        if n == buf {
            t.data_mut()[0] = f32::NAN;
        }
        Some((n.to_string(), t))
    });
    assert!(nan.contains("NaN"), "{nan}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A saved two-entry, 4-D gallery folder under the temp dir, for the gallery cases below.
#[cfg(feature = "gallery")]
fn two_entry_gallery(name: &str) -> std::path::PathBuf {
    use bridgeface::gallery::{Gallery, IndexSettings, ModelTag};
    let dir =
        std::env::temp_dir().join(format!("bridgeface-hostile-{name}-{}", std::process::id()));
    let mut g = Gallery::new(4, ModelTag::external(), IndexSettings::default()).expect("new");
    let names = vec!["a".to_string(), "b".to_string()];
    g.add(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], &names, &names, 1)
        .expect("add");
    g.save(&dir).expect("save");
    dir
}

#[cfg(feature = "gallery")]
fn assert_gallery_refusal(e: Error, needle: &str) {
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
    assert!(!e.contains('\n'), "{e}");
}

#[cfg(feature = "gallery")]
#[test]
fn gallery_index_neighbour_slots_are_checked_before_usearch_reads_them() {
    use bridgeface::gallery::{Gallery, INDEX_FILE};
    let dir = two_entry_gallery("slots");
    let path = dir.join(INDEX_FILE);
    let good = std::fs::read(&path).expect("read the index");
    // Layout (usearch 2.x): 8-byte matrix dims, 2 × 8 bytes of f16 vectors, the 64-byte header,
    // the 40-byte graph header, 2 levels; then node 0: key, level, the base list's count and
    // its slots. Before the check, usearch took slot 7 of a 2-node graph as given and read
    // node 7's vector and neighbours out of bounds while searching.
    let node0 = 8 + 2 * 8 + 64 + 40 + 2 * 2;
    let mut bad = good.clone();
    assert_eq!(bad[node0 + 10], 1, "node 0 links to node 1 at level 0");
    bad[node0 + 14] = 7;
    std::fs::write(&path, &bad).expect("write");
    for opened in [Gallery::load(&dir), Gallery::view(&dir)] {
        assert_gallery_refusal(
            opened.err().expect("refused"),
            "links to node 7, beyond its 2 nodes",
        );
    }
    // A neighbour count beyond the base list's slots (twice the connectivity): usearch would
    // read the next node as slots.
    let slots = 2 * bridgeface::gallery::IndexSettings::default().connectivity;
    let mut bad = good.clone();
    bad[node0 + 10] = 200;
    std::fs::write(&path, &bad).expect("write");
    assert_gallery_refusal(
        Gallery::view(&dir).err().expect("refused"),
        &format!("lists 200 neighbours at level 0, more than its {slots} slots"),
    );
    std::fs::write(&path, &good).expect("write");
    let g = Gallery::view(&dir).expect("the untouched gallery opens");
    assert_eq!(
        g.search(&[0.0, 1.0, 0.0, 0.0], 1).expect("search")[0].key,
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "gallery")]
#[test]
fn gallery_json_cannot_ask_usearch_for_huge_buffers() {
    // Before: `dimensions` and the expansions went to usearch unchecked, which sizes per-thread
    // buffers by them (2^40 dimensions: terabytes) before reading the index.
    use bridgeface::gallery::{Gallery, META_FILE};
    let dir = two_entry_gallery("huge-json");
    let meta = dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta).expect("read gallery.json");
    for (from, to, needle) in [
        (
            "\"dimensions\": 4",
            "\"dimensions\": 1099511627776",
            "gallery dimensions 1099511627776: must be 1 to 65536",
        ),
        (
            "\"expansion_search\": 256",
            "\"expansion_search\": 1152921504606846976",
            "expansions 1 to 65536",
        ),
        (
            "\"connectivity\": 32",
            "\"connectivity\": 4294967296",
            "connectivity must be 2 to 1024",
        ),
    ] {
        assert!(text.contains(from), "{from} in {text}");
        std::fs::write(&meta, text.replace(from, to)).expect("write");
        // Refused by `Gallery::new`, before usearch is asked for anything.
        assert_gallery_refusal(Gallery::load(&dir).err().expect("refused"), needle);
        assert_gallery_refusal(Gallery::view(&dir).err().expect("refused"), needle);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

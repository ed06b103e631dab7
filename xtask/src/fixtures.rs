//! `cargo xtask fixtures`: the committed test fixtures are what their scripts
//! write. `tests/fixtures/manifest.json` lists each generator (a command), the
//! files that decide its output (its script and what the script imports) and
//! the files it writes, each with its sha256.
//!
//! - `cargo xtask fixtures --check` (CI; no Python needed): every fixture file
//!   is written by a generator and has the recorded hash, and every
//!   generator's sources have theirs. A script changed without its fixtures
//!   being made again, or a fixture edited by hand, fails.
//! - `cargo xtask fixtures --run [NAME...]` (needs torch, transformers,
//!   scikit-learn): runs the generators (all, or those named) in the
//!   manifest's order and records the new hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{root, status};

#[derive(Serialize, Deserialize)]
struct Manifest {
    /// What the file is, for a reader who opens it.
    about: String,
    generators: Vec<Generator>,
}

#[derive(Serialize, Deserialize)]
struct Generator {
    name: String,
    /// The command, run in the repository root.
    run: Vec<String>,
    /// Files (from the repository root) that decide the outputs: sha256.
    sources: BTreeMap<String, String>,
    /// Files it writes (under `tests/fixtures/`): sha256.
    writes: BTreeMap<String, String>,
}

/// Files of `tests/fixtures/` that no generator writes: the scripts, their
/// documentation and this manifest.
fn is_not_output(name: &str) -> bool {
    name.ends_with(".py") || name == "README.md" || name == "manifest.json"
}

fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures")
}

fn manifest_path() -> PathBuf {
    fixtures_dir().join("manifest.json")
}

pub fn fixtures(args: &[String]) -> Result<()> {
    let mut manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(manifest_path())
            .with_context(|| format!("cannot read {}", manifest_path().display()))?,
    )
    .with_context(|| format!("{}: not a fixture manifest", manifest_path().display()))?;
    match args.first().map(String::as_str) {
        Some("--check") => check(&manifest),
        Some("--run") => {
            run(&mut manifest, &args[1..])?;
            check(&manifest)
        }
        _ => bail!("cargo xtask fixtures --check | --run [NAME...]"),
    }
}

fn sha256_of(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// Every recorded hash holds and every fixture file has a generator.
fn check(manifest: &Manifest) -> Result<()> {
    let mut problems = Vec::new();
    let mut written = BTreeMap::new();
    for g in &manifest.generators {
        let what = format!("source of `{}`", g.name);
        problems.extend(changed_files(&root(), &g.sources, &what));
        let what = format!("output of `{}`", g.name);
        problems.extend(changed_files(&fixtures_dir(), &g.writes, &what));
        for file in g.writes.keys() {
            if let Some(other) = written.insert(file.clone(), &g.name) {
                problems.push(format!(
                    "{file}: written by both `{other}` and `{}`",
                    g.name
                ));
            }
        }
    }
    for entry in walkdir::WalkDir::new(fixtures_dir()) {
        let entry = entry?;
        let name = entry
            .path()
            .strip_prefix(fixtures_dir())?
            .to_string_lossy()
            .into_owned();
        if entry.file_type().is_file() && !is_not_output(&name) && !written.contains_key(&name) {
            problems.push(format!("{name}: no generator in manifest.json writes it"));
        }
    }
    ensure!(
        problems.is_empty(),
        "tests/fixtures does not match manifest.json (make the fixtures again with \
         `cargo xtask fixtures --run NAME`):\n  {}",
        problems.join("\n  ")
    );
    println!(
        "fixtures: {} files of {} generators as their scripts write them",
        written.len(),
        manifest.generators.len()
    );
    Ok(())
}

/// A line for each file under `base` whose sha256 is not the one recorded.
fn changed_files(base: &Path, files: &BTreeMap<String, String>, what: &str) -> Vec<String> {
    files
        .iter()
        .filter_map(|(file, want)| match sha256_of(&base.join(file)) {
            Ok(got) if &got == want => None,
            Ok(_) => Some(format!("{file}: not the {what} recorded")),
            Err(e) => Some(format!("{e:#}")),
        })
        .collect()
}

/// Runs the generators named (all when none is) and records their hashes,
/// saving the manifest after each, so that an interrupted run keeps what it did.
fn run(manifest: &mut Manifest, names: &[String]) -> Result<()> {
    for name in names {
        ensure!(
            manifest.generators.iter().any(|g| &g.name == name),
            "no generator {name:?} in manifest.json"
        );
    }
    for i in 0..manifest.generators.len() {
        let g = &mut manifest.generators[i];
        if !names.is_empty() && !names.contains(&g.name) {
            continue;
        }
        let (program, args) = g
            .run
            .split_first()
            .context("a generator without a command")?;
        println!("fixtures: {} ({})", g.name, g.run.join(" "));
        status(Command::new(program).args(args).current_dir(root()))?;
        for (file, hash) in g.sources.iter_mut() {
            *hash = sha256_of(&root().join(file))?;
        }
        for (file, hash) in g.writes.iter_mut() {
            let new = sha256_of(&fixtures_dir().join(file))?;
            let verdict = if &new == hash { "unchanged" } else { "changed" };
            println!("  {file}: {verdict}");
            *hash = new;
        }
        save(manifest)?;
    }
    Ok(())
}

/// Writes the manifest through a temporary file and a rename.
fn save(manifest: &Manifest) -> Result<()> {
    let path = manifest_path();
    let staged = path.with_extension("json.tmp");
    std::fs::write(&staged, serde_json::to_string_pretty(manifest)? + "\n")?;
    std::fs::rename(&staged, &path)?;
    Ok(())
}

//! The layout stays true: every module of `src/` may name only the modules below it (the table
//! in [`ALLOWED`], which `src/lib.rs`'s `# Layout` and docs/architecture.md describe). A stage
//! of the pipeline that reaches up into the wiring, a later stage or the runtime fails here
//! with the file and the line.
//!
//! Only code that ships is checked: a file's `#[cfg(test)]` module (the last item of a file in
//! this code base) and a file declared `#[cfg(test)] mod x;` may use anything, as tests build
//! whole pipelines.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What each module may name, by `crate::` path prefix. A module may always name itself and its
/// own children; the first matching row (longest prefix first) decides.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &["model"]),
    ("backoff", &["config", "logging", "model", "metrics"]),
    ("metrics", &["config", "logging", "model", "backoff"]),
    ("logging", &["config"]),
    ("cli", &["config", "logging"]),
    ("alloc", &[]),
    ("retry_after", &[]),
    ("rate", &[]),
    ("usage", &[]),
    ("tasks", &["logging"]),
    // The shared context holds the live price cache the dashboard reads.
    ("app", &["config", "metrics", "pipeline::detect::cache"]),
    ("kafka", &["config", "logging", "model", "backoff", "metrics"]),
    (
        "store",
        &["config", "logging", "model", "backoff", "metrics", "kafka"],
    ),
    // Pollers normalise marketplace times with the parser's own rules.
    (
        "sources",
        &[
            "config",
            "logging",
            "model",
            "backoff",
            "metrics",
            "kafka",
            "store",
            "retry_after",
            "app",
            "pipeline::ingest::parse",
        ],
    ),
    // The stages: each names the messages between stages and what lies below, never the
    // wiring (`pipeline::engine`), the runtime or a stage after it.
    ("pipeline::messages", &["model"]),
    (
        "pipeline::ingest",
        &[
            "config",
            "logging",
            "model",
            "backoff",
            "metrics",
            "kafka",
            "store",
            "pipeline::messages",
        ],
    ),
    (
        "pipeline::detect",
        &[
            "config",
            "logging",
            "model",
            "backoff",
            "metrics",
            "kafka",
            "store",
            "pipeline::messages",
        ],
    ),
    (
        "pipeline::persist",
        &[
            "config",
            "logging",
            "model",
            "backoff",
            "metrics",
            "kafka",
            "store",
            "pipeline::messages",
        ],
    ),
    (
        "pipeline::publish",
        &[
            "config",
            "logging",
            "model",
            "backoff",
            "metrics",
            "kafka",
            "store",
            "pipeline::messages",
        ],
    ),
    (
        "pipeline::engine",
        &[
            "config", "logging", "model", "backoff", "metrics", "kafka", "store", "tasks", "app", "pipeline",
        ],
    ),
    ("pipeline", &["pipeline"]),
    (
        "alert",
        &[
            "config",
            "logging",
            "model",
            "backoff",
            "metrics",
            "kafka",
            "store",
            "retry_after",
            "tasks",
            "app",
        ],
    ),
    // The dashboard reads the live price cache through the application context.
    (
        "web",
        &[
            "config", "logging", "model", "backoff", "metrics", "kafka", "store", "rate", "app",
        ],
    ),
    (
        "runtime",
        &[
            "config", "logging", "model", "backoff", "metrics", "kafka", "store", "tasks", "app", "sources",
            "pipeline", "alert", "web", "rate",
        ],
    ),
    (
        "replay",
        &[
            "config", "logging", "model", "backoff", "metrics", "kafka", "store", "pipeline", "usage", "rate",
        ],
    ),
];

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's shipped code: everything before its `#[cfg(test)]` module.
fn shipped(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .enumerate()
        .position(|(i, l)| {
            l.trim() == "#[cfg(test)]"
                && lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    lines.into_iter().take(end).enumerate().map(|(i, l)| (i + 1, l))
}

/// Modules declared `#[cfg(test)] mod x;` in their parent's file.
fn test_only_modules(src: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        let module = module_of(src, file);
        let parent = if module == "lib" {
            String::new()
        } else {
            format!("{module}::")
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            let decl = pair[1].trim();
            if pair[0].trim() == "#[cfg(test)]" && decl.starts_with("mod ") && decl.ends_with(';') {
                out.push(format!(
                    "{parent}{}",
                    decl.trim_start_matches("mod ").trim_end_matches(';')
                ));
            }
        }
    }
    out
}

/// Every `crate::a::b…` path a line names, as `a::b…` (as far as the path's identifiers go;
/// a `{` group expands into one path per member's first segment).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let path: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_string();
        if after[path.len()..].trim_start_matches(':').starts_with('{') {
            let group = &after[path.len()..];
            let inner = group.trim_start_matches(':').trim_start_matches('{');
            let inner = inner.split('}').next().unwrap_or("");
            for member in inner.split(',') {
                let m: String = member
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let m = m.trim_end_matches(':');
                if m.is_empty() || m == "self" {
                    out.push(path.clone());
                } else {
                    out.push(format!("{path}::{m}"));
                }
            }
        } else if !path.is_empty() {
            out.push(path);
        }
        rest = &after[1..];
    }
    out
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}::"))
}

fn rule_for(module: &str) -> Option<(&'static str, &'static [&'static str])> {
    let mut rows: Vec<_> = ALLOWED.iter().filter(|(m, _)| under(module, m)).collect();
    rows.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    rows.first().map(|(m, a)| (*m, *a))
}

#[test]
fn every_module_names_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let test_only = test_only_modules(&src, &files);
    let mut violations = Vec::new();
    let mut unknown = BTreeSet::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" || test_only.iter().any(|t| under(&module, t)) {
            continue;
        }
        let Some((own, allowed)) = rule_for(&module) else {
            unknown.insert(module);
            continue;
        };
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for (n, line) in shipped(&text) {
            for path in crate_paths(line) {
                if under(&path, own) || allowed.iter().any(|a| under(&path, a)) {
                    continue;
                }
                violations.push(format!(
                    "{}:{n}: `{module}` names `crate::{path}`, which is not below it",
                    file.strip_prefix(&src).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from tests/layout.rs ALLOWED: {unknown:?}"
    );
    assert!(violations.is_empty(), "layout broken:\n{}", violations.join("\n"));
}

#[test]
fn a_stage_that_names_the_wiring_is_caught() {
    // The check itself: a line as a stage would write it if it reached up again.
    let (own, allowed) = rule_for("pipeline::persist::stage").expect("persist has a rule");
    for path in crate_paths("use crate::pipeline::engine::EngineContext;")
        .into_iter()
        .chain(crate_paths("use crate::runtime::{RunError, supervisor};"))
        .chain(crate_paths(
            "use crate::pipeline::{messages::Processed, publish};",
        ))
    {
        let ok = under(&path, own) || allowed.iter().any(|a| under(&path, a));
        assert_eq!(ok, path == "pipeline::messages::Processed", "{path}");
    }
}

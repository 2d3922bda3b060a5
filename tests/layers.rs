//! The layer rule of ARCHITECTURE.md, checked on the source: every module sits on a floor,
//! and a file may name (`use crate::…` or an inline `crate::…` path) only its own folder or
//! a lower floor. The workers (fleet, aws, bench) never name one another: whatever needs two
//! of them is a command. Vocabulary files (floor 0) may name each other. And every such name
//! is a `use` line, so a file's dependencies are read at its top.

use std::collections::BTreeMap;
use std::path::Path;

/// Floor of each top-level module of `src/`, bottom first.
const FLOORS: &[(&str, u8)] = &[
    // Vocabulary.
    ("event", 0),
    ("exit", 0),
    ("format", 0),
    ("inventory", 0),
    ("record", 0),
    ("resource", 0),
    ("shell", 0),
    ("spec", 0),
    // What a deployment does, as data.
    ("plan", 1),
    // What runs on a host, as values.
    ("script", 2),
    // SSH and local sessions.
    ("transport", 3),
    // The workers: never one another.
    ("fleet", 4),
    ("aws", 4),
    ("bench", 4),
    // The only writer of the terminal, and the results folders.
    ("printer", 5),
    ("results", 5),
    ("commands", 6),
    ("cli", 7),
    ("lib", 8),
    ("main", 8),
];

/// Floors whose modules may not name a sibling on the same floor.
const NO_SIBLINGS: &[u8] = &[4, 5];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

/// The top-level module a file under `src/` belongs to: `aws/alb.rs` → `aws`, `spec.rs` → `spec`.
fn module_of(relative: &str) -> String {
    let first = relative.split('/').next().unwrap_or(relative);
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module a file names through `crate::`: in `use` lines, groups over
/// several lines (`use crate::{a, b::{c, d}}`) and inline paths; comments are skipped.
fn named(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // The names at depth 0 of the group.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(after));
        }
        rest = after;
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

/// The arrows that break the rule, one line each: `from → to (why)`.
fn violations(files: &BTreeMap<String, String>) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, source) in files {
        let from = module_of(path);
        let Some(f) = floor(&from) else {
            bad.push(format!("{path}: module {from} has no floor: add it to FLOORS"));
            continue;
        };
        for to in named(source) {
            if to == from {
                continue;
            }
            match floor(&to) {
                None => bad.push(format!("{path} → {to}: no floor")),
                Some(t) if t > f => bad.push(format!("{path} → {to}: up from floor {f} to {t}")),
                Some(t) if t == f && NO_SIBLINGS.contains(&f) => {
                    bad.push(format!("{path} → {to}: a sibling on floor {f}"))
                }
                _ => {}
            }
        }
    }
    bad
}

fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(relative, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_arrow_points_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&root, &root, &mut files);
    assert!(files.len() > 30, "read {} files", files.len());
    let bad = violations(&files);
    assert!(bad.is_empty(), "arrows that point up or sideways:\n{}", bad.join("\n"));
}

/// Lines that name another module through an inline `crate::` path instead of a `use`.
fn inline_paths(files: &BTreeMap<String, String>) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, source) in files {
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default().trim_start();
            if code.contains("crate::") && !code.starts_with("use ") && !code.starts_with("pub use ") {
                bad.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn every_dependency_is_a_use_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&root, &root, &mut files);
    let bad = inline_paths(&files);
    assert!(
        bad.is_empty(),
        "name these with a use line at the top:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_upward_arrows_groups_and_inline_paths() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let ok: BTreeMap<_, _> = [
        file("plan/mod.rs", "use crate::spec::Spec;\nuse crate::shell::quote;\n"),
        file(
            "aws/alb.rs",
            "use super::launch;\nuse crate::{event, record::Record};\n",
        ),
        file("commands/deploy.rs", "use crate::aws;\nuse crate::fleet;\n"),
        file(
            "event.rs",
            "// see crate::printer, which owns the terminal\nuse crate::resource::Kind;\n",
        ),
    ]
    .into();
    assert_eq!(violations(&ok), Vec::<String>::new());
    assert_eq!(inline_paths(&ok), Vec::<String>::new());
    let up: BTreeMap<_, _> = [
        file(
            "inventory.rs",
            "fn f() { crate::commands::settings::toml_error(a, b) }\n",
        ),
        file(
            "script/step.rs",
            "use crate::{\n    plan,\n    printer::{Mode, Renderer},\n};\n",
        ),
        file("bench/clusters.rs", "use crate::aws::Aws;\n"),
        file("sneaky.rs", "\n"),
    ]
    .into();
    assert_eq!(
        violations(&up),
        [
            "bench/clusters.rs → aws: a sibling on floor 4",
            "inventory.rs → commands: up from floor 0 to 6",
            "script/step.rs → printer: up from floor 2 to 5",
            "sneaky.rs: module sneaky has no floor: add it to FLOORS",
        ]
    );
    assert_eq!(
        inline_paths(&up),
        ["inventory.rs:1: fn f() { crate::commands::settings::toml_error(a, b) }"]
    );
}

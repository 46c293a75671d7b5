//! The module map of README's design notes, enforced: every top-level module
//! of `src/` has a row, its imports (`crate::x`, outside test code) are among
//! those its row allows, the allowed graph has no cycle, no two files of one
//! module import each other round a cycle, and `core` touches no I/O and no
//! command-line type. Reads the source as text: no build of anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Paths a file of `core` must not name: I/O, processes, threads,
/// environment, system calls, runtimes, the command line, Kubernetes, logging.
/// Each is matched where an identifier starts (`log::` is not `attempt_log::`).
const CORE_FORBIDDEN: [&str; 17] = [
    "std::fs",
    "std::process",
    "std::thread",
    "std::env",
    "std::os::",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "libc::",
    "tokio::",
    "clap::",
    "kube::",
    "k8s_openapi::",
    "socket2::",
    "log::",
    "println!",
    "eprintln!",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The allowed imports per module, from the README table after "**Module map.**".
fn readme_map() -> BTreeMap<String, BTreeSet<String>> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("**Module map.**")
        .expect("README design notes have a module map");
    let mut map = BTreeMap::new();
    for line in readme[start..].lines().skip(1) {
        let line = line.trim();
        if map.is_empty() && !line.starts_with('|') {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let (Some(name), Some(allowed)) = (cells.first(), cells.last()) else {
            continue;
        };
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue; // the header and the separator
        };
        let allowed = allowed
            .split(',')
            .map(|a| a.trim().trim_matches('`').to_string())
            .filter(|a| !a.is_empty() && a != "—")
            .collect();
        map.insert(name.to_string(), allowed);
    }
    map
}

/// The top-level modules of the crate (files and directories of `src/`, but lib.rs and main.rs).
fn top_modules() -> BTreeSet<String> {
    fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_string())
            }
        })
        .collect()
}

/// Every non-test source file of a module (test-only files are named `*_tests.rs`).
fn files_of(module: &str) -> Vec<PathBuf> {
    let dir = src().join(module);
    let mut out = Vec::new();
    if src().join(format!("{module}.rs")).exists() {
        out.push(src().join(format!("{module}.rs")));
    }
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs")
                && !p.file_name().unwrap().to_str().unwrap().ends_with("_tests.rs")
            {
                out.push(p);
            }
        }
    }
    walk(&dir, &mut out);
    out
}

/// The file's text up to its test module, without comment lines.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` names `path` where an identifier starts.
fn names(text: &str, path: &str) -> bool {
    text.match_indices(path)
        .any(|(i, _)| !text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
}

/// Identifiers that follow `prefix` in `text` (`crate::` -> `core`, `backend`, ...).
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            // `crate::x`, not `apiserver_guard_crate::x` or `some_crate::x`.
            !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Module -> the other top-level modules its non-test code names.
fn actual_imports() -> BTreeMap<String, BTreeSet<String>> {
    let tops = top_modules();
    tops.iter()
        .map(|m| {
            let used = files_of(m)
                .iter()
                .flat_map(|f| {
                    names_after(&code(f), "crate::")
                        .into_iter()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .filter(|n| n != m && tops.contains(n))
                .collect();
            (m.clone(), used)
        })
        .collect()
}

/// A cycle in `graph`, as a path that comes back to its start, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_has_a_row_and_imports_only_what_its_row_allows() {
    let map = readme_map();
    let tops = top_modules();
    let missing: Vec<_> = tops.iter().filter(|m| !map.contains_key(*m)).collect();
    assert!(
        missing.is_empty(),
        "modules missing from README's module map: {missing:?}"
    );
    let stale: Vec<_> = map.keys().filter(|m| !tops.contains(*m)).collect();
    assert!(
        stale.is_empty(),
        "README's module map names modules that do not exist: {stale:?}"
    );
    let mut wrong = Vec::new();
    for (m, used) in actual_imports() {
        for u in used.difference(&map[&m]) {
            wrong.push(format!("{m} imports {u}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports the module map does not allow (fix the code, or the map if the layering really changes): {wrong:?}"
    );
}

#[test]
fn the_module_map_has_no_cycle() {
    let map = readme_map();
    assert!(map.len() > 10, "the map was read: {map:?}");
    assert_eq!(cycle(&map), None, "README's module map has a cycle");
    assert_eq!(cycle(&actual_imports()), None, "the code has an import cycle");
}

#[test]
fn no_two_files_of_a_module_import_each_other_round_a_cycle() {
    for m in top_modules().into_iter().filter(|m| src().join(m).is_dir()) {
        let dir = src().join(&m);
        let files: BTreeMap<String, PathBuf> = files_of(&m)
            .into_iter()
            .filter(|p| p.parent() == Some(dir.as_path()) && !p.ends_with("mod.rs"))
            .map(|p| (p.file_stem().unwrap().to_str().unwrap().to_string(), p))
            .collect();
        let graph: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .map(|(name, path)| {
                let text = code(path);
                let used = names_after(&text, "super::")
                    .into_iter()
                    .chain(names_after(&text, &format!("crate::{m}::")))
                    .filter(|n| *n != name && files.contains_key(*n))
                    .map(str::to_string)
                    .collect();
                (name.clone(), used)
            })
            .collect();
        assert_eq!(
            cycle(&graph),
            None,
            "files of module {m} import each other round a cycle"
        );
    }
}

#[test]
fn core_touches_no_io_and_no_other_module() {
    let mut found = Vec::new();
    for f in files_of("core") {
        let text = code(&f);
        for bad in CORE_FORBIDDEN {
            if names(&text, bad) {
                found.push(format!("{}: {bad}", f.display()));
            }
        }
        for n in names_after(&text, "crate::") {
            if n != "core" {
                found.push(format!("{}: crate::{n}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "core must stay pure: {found:?}");
}

/// The checks above can fail: a cycle and a forbidden import are found in
/// made-up input (the real tree passes them).
#[test]
fn the_checks_see_a_cycle_and_a_crate_path() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["c".to_string()].into()),
        ("c".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let text = "use crate::daemon::x; let y = other_crate::z; crate::core::m();";
    assert_eq!(names_after(text, "crate::"), ["daemon", "core"]);
    assert!(names("use std::fs::File;", "std::fs") && names("x; log::warn!()", "log::"));
    assert!(!names("attempt_log::LOG_PREFIX, \"kube-proxy\"", "log::") && !names("\"kube-proxy\"", "kube::"));
}

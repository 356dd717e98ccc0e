//! Tidy: the architecture's rules, checked on the source tree so that none of
//! them rests on prose alone (in the spirit of rust-analyzer's `tidy`). Each
//! test names one rule from ARCHITECTURE.md and lists every place that breaks
//! it. Plain file reading, no dependencies: it runs with the rest of the suite
//! (`cargo nextest run --workspace`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a broken rule or an unreadable tree fails it"
)]

use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Every `.rs` file under `dir` (recursively; `target` and `node_modules`
/// left out), relative to the root, sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && name != "node_modules" && !name.starts_with('.') {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    let root = root();
    let mut relative: Vec<PathBuf> = out
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    relative.sort();
    relative
}

/// Library and binary sources: `src/` of every crate under `libs/` and
/// `services/` (tests, benches and examples are not the product).
fn product_sources() -> Vec<PathBuf> {
    let mut files = rust_files("libs");
    files.extend(rust_files("services"));
    files.retain(|p| p.components().any(|c| c.as_os_str() == "src"));
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// `text` without `//` comments (doc comments included), line numbers kept.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The file's code without its `#[cfg(test)]` items (unit-test modules,
/// skipped to their closing brace) and without `//` comments; files named
/// `tests.rs` are tests whole.
fn product_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = without_comments(&read(path));
    let mut kept = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            kept.push(line);
            continue;
        }
        // Skip the item the attribute applies to: one line ending in `;`, or
        // everything up to its braces' balance.
        let mut depth = 0i64;
        let mut opened = false;
        for item_line in lines.by_ref() {
            depth += i64::try_from(item_line.matches('{').count()).unwrap();
            depth -= i64::try_from(item_line.matches('}').count()).unwrap();
            opened |= item_line.contains('{');
            if (opened && depth <= 0) || (!opened && item_line.trim_end().ends_with(';')) {
                break;
            }
        }
    }
    kept.join("\n")
}

/// The crate a product source belongs to (`libs/app`, `services/gateway`).
fn crate_of(path: &Path) -> String {
    path.components()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Fails listing `offences` (one line each) under `rule`.
fn holds(rule: &str, offences: &[String]) {
    assert!(
        offences.is_empty(),
        "{rule}; broken in:\n  {}",
        offences.join("\n  ")
    );
}

/// The `[dependencies]` names of a crate's manifest (not dev-dependencies).
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = read(manifest);
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The HTTP stack: only `services/` and the verify layer (a tower layer for
/// other Rust services) may use it.
const HTTP_CRATES: &[&str] = &[
    "axum",
    "axum-extra",
    "hyper",
    "hyper-util",
    "http",
    "tower-http",
];

#[test]
fn libraries_have_no_http_stack_except_the_verify_layer() {
    let mut offences = Vec::new();
    for entry in std::fs::read_dir(root().join("libs")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "verify" {
            continue;
        }
        let manifest = dir
            .join("Cargo.toml")
            .strip_prefix(root())
            .unwrap()
            .to_path_buf();
        for dependency in dependencies(&manifest) {
            if HTTP_CRATES.contains(&dependency.as_str()) {
                offences.push(format!("{}: depends on {dependency}", manifest.display()));
            }
        }
    }
    for file in product_sources() {
        if !file.starts_with("libs") || file.starts_with("libs/verify") {
            continue;
        }
        let code = product_code(&file);
        for needle in ["axum::", "hyper::", "http::", "tower_http::"] {
            if code
                .lines()
                .any(|l| l.contains(needle) && !l.contains("redis::"))
            {
                offences.push(format!("{}: uses {needle}", file.display()));
            }
        }
    }
    holds(
        "no axum or http below services/ (libs/verify excepted)",
        &offences,
    );
}

#[test]
fn sql_lives_in_the_store_only() {
    let offences: Vec<String> = product_sources()
        .into_iter()
        .filter(|f| !f.starts_with("libs/store") && !f.starts_with("libs/testkit"))
        .filter(|f| {
            let code = product_code(f);
            code.contains("sqlx::query") || code.contains("sqlx::raw_sql")
        })
        .map(|f| f.display().to_string())
        .collect();
    holds("SQL is written in libs/store only", &offences);
}

#[test]
fn the_wall_clock_is_read_only_through_the_clock() {
    let offences: Vec<String> = product_sources()
        .into_iter()
        .filter(|f| f != Path::new("libs/core/src/clock.rs"))
        .flat_map(|f| {
            let code = product_code(&f);
            [
                "SystemTime::now",
                "OffsetDateTime::now_utc",
                "Utc::now",
                "UNIX_EPOCH",
            ]
            .into_iter()
            .filter(|needle| code.contains(needle))
            .map(|needle| format!("{}: {needle}", f.display()))
            .collect::<Vec<_>>()
        })
        .collect();
    holds(
        "the wall clock is read through gatehouse_core::Clock only (libs/core/src/clock.rs)",
        &offences,
    );
}

/// The attribute text of every `#[allow(...)]` / `#![allow(...)]` in `text`
/// (across lines, to its closing `)]`), with its line number.
fn allow_attributes(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut search = 0;
    while let Some(offset) = text[search..].find("allow(") {
        let start = search + offset;
        search = start + "allow(".len();
        let before = text[..start].trim_end();
        if !(before.ends_with("#[") || before.ends_with("#![")) {
            continue;
        }
        let end = text[start..]
            .find(")]")
            .map_or(text.len(), |e| start + e + 2);
        let line = text[..start].lines().count();
        found.push((line, text[start..end].to_owned()));
    }
    found
}

#[test]
fn every_allow_says_why() {
    let mut files = rust_files("libs");
    files.extend(rust_files("services"));
    files.extend(rust_files("tests"));
    // This file quotes the pattern in its own probes.
    files.retain(|f| f != Path::new("tests/tidy.rs"));
    let offences: Vec<String> = files
        .iter()
        .flat_map(|f| {
            allow_attributes(&without_comments(&read(f)))
                .into_iter()
                .filter(|(_, attribute)| !attribute.contains("reason"))
                .map(|(line, attribute)| format!("{}:{line}: {attribute}", f.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    holds("every #[allow] carries reason = \"...\"", &offences);
}

#[test]
fn every_lua_script_is_loaded_by_exactly_one_module() {
    let sources: Vec<(PathBuf, String)> = product_sources()
        .into_iter()
        .map(|f| {
            let code = read(&f);
            (f, code)
        })
        .collect();
    let mut offences = Vec::new();
    let mut scripts = 0;
    for entry in std::fs::read_dir(root().join("lua")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "lua") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        scripts += 1;
        let quoted = format!("lua/{name}\"");
        let loaders: Vec<String> = sources
            .iter()
            .filter(|(_, code)| code.contains(&quoted))
            .map(|(f, _)| f.display().to_string())
            .collect();
        if loaders.len() != 1 {
            offences.push(format!("lua/{name}: loaded by {loaders:?}"));
        }
    }
    assert!(scripts > 20, "the scripts under lua/ were not found");
    holds("each lua/*.lua is include_str!'d by one module", &offences);
}

/// The crates the gateway must not depend on: state is reached through
/// `gatehouse_app` only.
const STATE_CRATES: &[&str] = &[
    "gatehouse-store",
    "gatehouse-session",
    "gatehouse-redis",
    "gatehouse-cache",
    "gatehouse-events",
    "redis",
];

#[test]
fn the_gateway_reaches_state_only_through_the_app() {
    let mut offences: Vec<String> = dependencies(Path::new("services/gateway/Cargo.toml"))
        .into_iter()
        .filter(|d| STATE_CRATES.contains(&d.as_str()))
        .map(|d| format!("services/gateway/Cargo.toml: depends on {d}"))
        .collect();
    for file in product_sources() {
        if crate_of(&file) != "services/gateway" {
            continue;
        }
        let code = product_code(&file);
        for needle in [
            "gatehouse_store::",
            "gatehouse_session::",
            "gatehouse_redis::",
            "gatehouse_cache::",
            "gatehouse_events::",
            "redis::",
        ] {
            if code.contains(needle) {
                offences.push(format!("{}: uses {needle}", file.display()));
            }
        }
    }
    holds(
        "the gateway reaches state only through libs/app (no store, session, cache, event or Redis crate)",
        &offences,
    );
}

#[test]
fn the_rules_find_what_they_look_for() {
    // Each detector, on a line that breaks its rule: a rule whose detector
    // cannot fire would pass forever.
    let allows =
        allow_attributes("#[allow(clippy::x)]\nfn a() {}\n#![allow(\n  b,\n  reason = \"c\"\n)]\n");
    assert_eq!(allows.len(), 2);
    assert!(!allows[0].1.contains("reason") && allows[1].1.contains("reason"));
    let manifest = root().join("target/tidy-probe/Cargo.toml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        "[package]\nname = \"x\"\n[dependencies]\naxum.workspace = true\nserde = \"1\"\n[dev-dependencies]\nhyper = \"1\"\n",
    )
    .unwrap();
    let relative = manifest.strip_prefix(root()).unwrap();
    assert_eq!(dependencies(relative), ["axum", "serde"]);
    assert_eq!(
        crate_of(Path::new("services/gateway/src/a.rs")),
        "services/gateway"
    );
}

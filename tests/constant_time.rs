//! SECURITY #14: secret bytes are never compared with `==`. The types that hold them have no
//! `PartialEq` (compile-fail doctests on `TokenDigest`, `BearerSecret`, `SecretValue` and
//! `MasterKey`); this test is the lint for the rest: no line of product code (test modules
//! excluded) compares an exposed secret, a digest, a sealed blob or a binding with `==` or `!=`.
//! A line that compares public values next to such a word says so with `// public: <why>`, on
//! the line itself or the one above.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Words that mark a value as secret or as derived from one.
const SECRET_WORDS: &[&str] = &[
    "expose()",
    "digest",
    "sealed",
    "binding",
    "material",
    "secret_value",
    "token_bytes",
    "api_key",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_secret_is_compared_with_eq() {
    let root = airlock_testkit::workspace_root().join("crates");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&root).unwrap() {
        let src = krate.unwrap().path().join("src");
        // The testkit and the fuzz bodies are test code.
        if src.is_dir()
            && !src.starts_with(root.join("airlock-testkit"))
            && !src.starts_with(root.join("airlock-fuzz"))
        {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            // A comparison of public values next to a secret word says so, on the line or the
            // one above: `// public: why`.
            let previous = n
                .checked_sub(1)
                .and_then(|p| text.lines().nth(p))
                .unwrap_or("");
            if line.contains("// public:") || previous.trim_start().starts_with("// public:") {
                continue;
            }
            let code = line.split("//").next().unwrap_or_default();
            let compares = code.contains("==") || code.contains("!=");
            let lower = code.to_ascii_lowercase();
            if compares && SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "compare these in constant time (subtle's ct_eq):\n{}",
        found.join("\n")
    );
}

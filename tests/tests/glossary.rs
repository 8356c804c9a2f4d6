//! One word per concept: the words `docs/glossary.md` retires appear nowhere in the code or the
//! docs again (the glossary itself, which names them, aside).

use std::path::{Path, PathBuf};

/// The retired words: the first cell of each row of the glossary's "Retired words" table, as
/// written between backticks. A lower-case word is looked for in any case.
fn retired_words(glossary: &str) -> Vec<String> {
    let table = glossary.split("## Retired words").nth(1).expect("the glossary has a `## Retired words` table");
    table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| line.split('`').nth(1).expect("a retired word between backticks").to_string())
        .collect()
}

/// Every file whose words users or developers read: sources, scripts, docs, the template. Only
/// the project's own folders are walked, not what a build or a demo left in the clone.
fn readable_files(root: &Path) -> Vec<PathBuf> {
    let folders = ["crates", "cli", "functions", "infra", "tests", "scripts", "docs", ".config"];
    let skip = ["node_modules", "golden"];
    let kinds = ["rs", "md", "sh", "py", "yaml", "toml"];
    let readable = |p: &Path| p.is_file() && p.extension().is_some_and(|e| kinds.iter().any(|k| e == *k));
    let top = std::fs::read_dir(root).unwrap().flatten().map(|e| e.path());
    let mut files: Vec<PathBuf> = top.filter(|p| readable(p)).collect();
    let mut dirs: Vec<PathBuf> = folders.iter().map(|f| root.join(f)).filter(|d| d.is_dir()).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !skip.contains(&name.as_str()) {
                    dirs.push(path);
                }
            } else if readable(&path) {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn no_retired_word_is_used_anywhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let glossary_path = root.join("docs/glossary.md");
    let retired = retired_words(&std::fs::read_to_string(&glossary_path).unwrap());
    assert!(retired.len() >= 5, "the glossary retires words: {retired:?}");
    let this_file = Path::new(file!()).file_name().unwrap();
    let mut offenders = Vec::new();
    for path in readable_files(&root) {
        if path.ends_with("docs/glossary.md") || path.file_name() == Some(this_file) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            for word in &retired {
                let found = if word.chars().all(|c| c.is_lowercase() || c == ' ') {
                    line.to_lowercase().contains(word.as_str())
                } else {
                    line.contains(word.as_str())
                };
                if found {
                    offenders.push(format!("{}:{}: `{word}`", path.strip_prefix(&root).unwrap().display(), n + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "retired words (docs/glossary.md says what to use):\n{}", offenders.join("\n"));
}

#[test]
fn the_retired_words_are_read_from_the_glossary_table() {
    let glossary =
        "# G\n## Retired words\n| retired | use |\n|---|---|\n| `old word` | new |\n| `Old::Name` | `New` |\n";
    assert_eq!(retired_words(glossary), ["old word", "Old::Name"]);
}
